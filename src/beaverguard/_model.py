"""Model directories and the ONNX scorer.

A model directory is described by data, not code: ``beaverguard.json`` names the
labels in output order (the 14 categories and ``unsafe``; newer models add
``injection`` after them, and older ones keep working without it), the window length, the input layout and the calibrated
default thresholds; ``model.onnx`` and ``tokenizer.json`` sit beside it. Only
onnxruntime and tokenizers are needed to score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from beaverguard._categories import EXTRA_LABELS, LABELS
from beaverguard._encoding import Conversation, Encoder
from beaverguard._exceptions import ModelError
from beaverguard._normalize import normalize as fold
from beaverguard._types import Exchange, Rail
from beaverguard._views import decoded_views, scored
from beaverguard._views import load as load_views
from beaverguard._words import load as load_words

__all__ = ["Scorer", "ModelSpec", "OnnxScorer", "DEFAULT_MODEL", "default_model_dir", "default_batch_size", "Provider"]

# Scoring already runs one worker per core; tokenizers' own thread pool on top would oversubscribe
# the CPU (and it warns after a fork). A value the user set wins.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("beaverguard")
DEFAULT_MODEL = "beaverguard-minilm-l6-v3-int8"
_CHARS_PER_TOKEN = 16
Provider = Literal["auto", "cpu", "cuda"]


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores exchanges: the ONNX model, or a plugin.

    ``score`` is synchronous and CPU- or GPU-bound; the guard calls it from worker
    threads, never on the event loop. It returns one mapping per exchange, from
    each label in ``labels`` to a probability.
    """

    labels: tuple[str, ...]

    def score(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        """One mapping of label to probability per exchange, in order."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    """What ``beaverguard.json`` says about a model directory."""

    path: Path
    name: str
    labels: tuple[str, ...]
    max_length: int
    thresholds: Mapping[Rail, Mapping[str, float]]
    sha256: Mapping[str, str]
    #: False when a row's scores depend on the other rows of its run (int8 with dynamic
    #: activation quantization: one scale per run), so rows must run alone.
    batch_invariant: bool = True
    #: How earlier conversation turns are laid out (role markers, separator); None: the model
    #: was not trained on conversations, and sees earlier turns as plain text before the prompt.
    conversation: Mapping[str, object] | None = None
    #: The languages the model reads (ISO 639-1); text mostly in others is marked unverified.
    #: A model directory that does not say reads English, as every model before the key did.
    languages: tuple[str, ...] = ("en",)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> ModelSpec:
        path = Path(path)
        fix = "rebuild it with `beaverguard export`, or point `model:` in the policy at a valid directory"
        if not path.is_dir():
            raise ModelError(f"model directory {path} does not exist; {fix}")
        for name in ("beaverguard.json", "model.onnx", "tokenizer.json"):
            if not (path / name).is_file():
                raise ModelError(f"{path / name} is missing; {fix}")
        try:
            raw = json.loads((path / "beaverguard.json").read_text())
            spec = cls(path, raw["name"], tuple(raw["labels"]), int(raw["max_length"]),
                       {rail: dict(raw["thresholds"][rail]) for rail in ("input", "output")},
                       dict(raw.get("sha256", {})), bool(raw.get("batch_invariant", True)),
                       raw.get("conversation"), tuple(raw.get("languages", ("en",))))
            if spec.conversation is not None:
                Conversation(**spec.conversation)  # a malformed layout fails here, not at the first request
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path / 'beaverguard.json'} is not a valid model config ({exc!r}); {fix}") from exc
        extra = spec.labels[len(LABELS):]
        if spec.labels[:len(LABELS)] != LABELS or extra != EXTRA_LABELS[:len(extra)]:
            raise ModelError(f"{path / 'beaverguard.json'}: labels {list(spec.labels)} do not match the 14 "
                             f"BeaverTails categories plus 'unsafe' in order ({list(LABELS)}), optionally "
                             f"followed by {list(EXTRA_LABELS)}; {fix}")
        if verify:
            for name, digest in spec.sha256.items():
                if hashlib.sha256((path / name).read_bytes()).hexdigest() != digest:
                    raise ModelError(f"{path / name} is corrupt (sha256 mismatch); reinstall beaverguard or {fix}")
        return spec


def default_model_dir() -> Path:
    """The embedded default model: packaged in the wheel, or ``onnx_models/`` of a source checkout."""
    candidates = [Path(str(resources.files("beaverguard"))) / "onnx_models" / DEFAULT_MODEL,
                  Path(__file__).resolve().parents[2] / "onnx_models" / DEFAULT_MODEL]
    for c in candidates:
        if (c / "beaverguard.json").is_file():
            return c
    raise ModelError(f"no default model is installed (looked for {DEFAULT_MODEL} in "
                     f"{', '.join(map(str, candidates))}); pass a model directory to Guard(model=...) "
                     "or build one with `beaverguard train` and `beaverguard export`")


def default_batch_size(on_gpu: bool, batch_invariant: bool) -> int:
    """Most windows in one run, unless set: 1 where rows must run alone, else 64 on a GPU, 8 on a CPU."""
    return 1 if not batch_invariant else 64 if on_gpu else 8


def _providers(provider: Provider) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelError(f"provider 'cuda' asked for but onnxruntime offers {available}; "
                             "install onnxruntime-gpu and check the CUDA libraries")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "auto" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _preload_cuda() -> None:
    """Load the CUDA and cuDNN libraries of the ``nvidia-*`` pip packages (or PyTorch's), if onnxruntime can.

    onnxruntime-gpu finds them only on the loader's path otherwise; ``preload_dlls``
    (onnxruntime >= 1.21) is its own way to use pip-installed CUDA. Best effort: a
    library it cannot find shows up as the CUDA provider failing to start.
    """
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - untyped errors from a best-effort loader
            logger.debug("onnxruntime.preload_dlls failed: %s", exc)


def _on_gpu(provider: Provider, active: Sequence[str]) -> bool:
    """Whether a session runs on CUDA; onnxruntime falls back to the CPU silently, so say so here.

    ``provider: cuda`` that ends up on the CPU is an error (the plan, the latency and the
    cost all assume a GPU); ``auto`` falls back with a warning.
    """
    if active and active[0] == "CUDAExecutionProvider":
        return True
    fix = ("the CUDA execution provider did not start (onnxruntime-gpu needs the CUDA and cuDNN "
           "libraries of its build, e.g. the nvidia-* pip packages or PyTorch's; "
           "`python -c 'import onnxruntime as o; o.preload_dlls(); o.print_debug_info()'` shows what it finds)")
    if provider == "cuda":
        raise ModelError(f"provider 'cuda' asked for, but the session runs on {list(active)}: {fix}")
    if provider == "auto":
        logger.warning("beaverguard: scoring on the CPU: %s", fix)
    return False


class OnnxScorer:
    """Score exchanges with an exported BeaverTails model on onnxruntime.

    Long text is scored in overlapping windows, text with encoded parts once
    more per decoded view (``_views``), and a response once more on its own
    (``answer_alone``); the maximum per label is kept. Windows of
    one call are sorted by length and run in small batches, so short exchanges do
    not pay for the padding of long ones.
    """

    def __init__(self, model_dir: str | Path | None = None, *, provider: Provider = "auto",
                 threads: int | None = None, batch_size: int | None = None,
                 max_tokens: int | None = None, normalize: bool = True,
                 run_tokens: int | None = None, wide_threads: int = 0, decode: bool = True,
                 answer_alone: bool = True) -> None:
        self.spec = ModelSpec.load(model_dir or default_model_dir())
        self.labels = self.spec.labels
        self.providers = _providers(provider)
        self.on_gpu = self.providers[0] == "CUDAExecutionProvider"
        if self.on_gpu:
            _preload_cuda()
        self.batch_invariant = self.spec.batch_invariant
        self.run_tokens = run_tokens  # most tokens in one run (windows x the longest); None: no cap
        self.max_tokens = max_tokens
        self.normalize = normalize
        self.decode = decode
        # The models learn QA moderation mostly from harmful questions, so a harmful answer to a harmless
        # question ("What should I cook?" / "Put rat poison in it") scored below the line with its prompt;
        # with an empty prompt the same answer reads as what it is.
        self.answer_alone = answer_alone
        if decode:
            load_views()  # the word list and its decoded look-ups now (~0.5 s, once per process), not on a request
        elif normalize:
            load_words()
        self.threads = threads if threads is not None else (0 if self.on_gpu else 1)
        self.session = self._session(self.threads)
        if self.on_gpu:  # what the session really runs on: onnxruntime falls back to the CPU silently
            self.on_gpu = _on_gpu(provider, self.session.get_providers())
        # A second session with more intra-op threads, for a run that has the machine to itself
        # (onnxruntime fixes the thread count per session). Its scores are the narrow session's, bit
        # for bit, on the default model (benchmarks/results/latency.md).
        self.wide = self._session(wide_threads) if not self.on_gpu and wide_threads > max(self.threads, 1) else None
        # A model whose scores depend on the run's other rows scores each window alone: a request's
        # verdict must not depend on what else was in flight.
        self.batch_size = batch_size or default_batch_size(self.on_gpu, self.batch_invariant)
        self.input_names = {i.name for i in self.session.get_inputs()}
        layout = Conversation(**self.spec.conversation) if self.spec.conversation else Conversation.plain()
        self.encoder = Encoder(self.spec.path / "tokenizer.json", self.spec.max_length, layout)

    def _session(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # A session's thread pool spins after a run by default, waiting for the next one. After a wide run,
        # that spinning took a core from the single-threaded runs a rising load (or the rest of a long text)
        # starts next: two 256-token runs side by side took 40 ms instead of 20. Stopped at the end of each
        # run, the next wide run is no slower (benchmarks/results/latency.md).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            return ort.InferenceSession(str(self.spec.path / "model.onnx"), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{self.spec.path / 'model.onnx'} could not be loaded ({exc}); "
                             "reinstall beaverguard or rebuild the model with `beaverguard export`") from exc

    def score(self, exchanges: Sequence[Exchange]) -> list[dict[str, float]]:
        """Probabilities per label for each exchange: the maximum over its views and their windows.

        The batcher runs the same three steps itself (:meth:`encode`, :meth:`run_windows`,
        :meth:`finish`), so that it can spread the windows of one text over its workers.
        """
        if not exchanges:
            return []
        per_exchange = self.encode(exchanges)
        probs = self.run_windows([w for ws in per_exchange for w in ws])
        ends = np.cumsum([len(ws) for ws in per_exchange])
        return [self.finish(e, probs[end - len(ws):end]) for e, ws, end in zip(exchanges, per_exchange, ends)]

    def encode(self, exchanges: Sequence[Exchange]) -> list[list]:
        """The windows of each exchange, over all its views (tokenized once, prepared first), at least one each."""
        owners, seen = self.seen(exchanges)
        per_view = self.encoder.windows([e.prompt for e in seen], [e.response for e in seen], self.max_tokens,
                                        [e.context for e in seen])
        out: list[list] = [[] for _ in exchanges]
        for owner, windows in zip(owners, per_view):
            out[owner] += windows
        return out

    def estimate(self, exchange: Exchange, chars_per_token: float) -> tuple[float, int]:
        """(tokens, windows) that scoring ``exchange`` will take, guessed from its length (no tokenizing)."""
        cap = float("inf") if self.max_tokens is None else self.max_tokens
        prompt = min(len(exchange.prompt) / chars_per_token, cap)
        response = None if exchange.response is None else min(len(exchange.response) / chars_per_token, cap)
        if exchange.context:  # earlier turns only fill the room the window has left: never another window
            room = self.spec.max_length - 3 - prompt - (response or 0)
            prompt += max(0.0, min(sum(len(t) for _, t in exchange.context) / chars_per_token, room))
        tokens, windows = self.encoder.estimate(prompt, response)
        if response is not None and self.answer_alone:
            alone = self.encoder.estimate(0.0, response)
            tokens, windows = tokens + alone[0], windows + alone[1]
        return tokens, windows

    def finish(self, exchange: Exchange, probs: np.ndarray) -> dict[str, float]:
        """An exchange's scores from the probabilities of its windows: the maximum per label."""
        return dict(zip(self.labels, map(float, probs.max(axis=0))))

    def seen(self, exchanges: Sequence[Exchange]) -> tuple[list[int], list[Exchange]]:
        """Each exchange as the model sees it, once per view, with the index of the exchange it came from.

        First the exchange prepared; then each decoded view of the prompt with the
        response, and the prompt with each decoded view of the response; then, with
        ``answer_alone``, the response with an empty prompt and no earlier turns.
        Earlier turns are prepared and go with every other view.
        """
        owners, seen = [], []
        for i, e in enumerate(exchanges):
            prompts = self.views(e.prompt)
            responses = [None] if e.response is None else self.views(e.response)
            context = tuple((role, self.prepare(text)) for role, text in e.context)
            for p, r in [*((p, responses[0]) for p in prompts), *((prompts[0], r) for r in responses[1:])]:
                owners.append(i)
                seen.append(replace(e, prompt=p, response=r, context=context))
            if e.response is not None and self.answer_alone:
                owners.append(i)
                seen.append(replace(e, prompt="", response=responses[0], context=()))
        return owners, seen

    def views(self, text: str) -> list[str]:
        """``prepare(text)``, then (unless ``decode`` is off) each decoded view of the capped text, prepared.

        Where encoded spans make up most of the text, its first decoded view (those spans decoded in
        place) may stand in for it: the model reads encoded text as noise (``_views.scored``).
        """
        first = self.prepare(text)
        if not self.decode:
            return [first]
        if self.max_tokens is not None:
            text = text[: self.max_tokens * _CHARS_PER_TOKEN]
        found, mostly_encoded = decoded_views(text)
        return scored(first, list(map(self.prepare, found)), mostly_encoded)

    def prepare(self, text: str) -> str:
        """The text as the model sees it: capped, valid UTF-8, and normalized unless that is off.

        The character cap (``max_tokens`` x 16, far more than that many tokens of any
        real text) bounds the work on a huge message before tokenizing it.
        """
        if self.max_tokens is not None:
            text = text[: self.max_tokens * _CHARS_PER_TOKEN]
        if self.normalize:
            return fold(text)  # drops lone surrogates too
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: the tokenizer takes valid text only
            text = text.encode("utf-8", "replace").decode("utf-8")
        return text

    def run_windows(self, windows: Sequence, wide: bool = False) -> np.ndarray:
        """Sigmoid outputs for windows, in order, run in length-sorted batches.

        A batch holds at most ``batch_size`` windows and, with ``run_tokens``, at
        most that many tokens counting padding (one window at least). ``wide`` runs
        them on the session with more threads, where there is one.
        """
        session = self.wide if wide and self.wide is not None else self.session
        lengths = [len(ids) for ids, _ in windows]
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(windows), len(self.labels)), dtype=np.float32)
        starts = [0]
        for end in range(1, len(order)):  # sorted, so the newest window is the batch's widest
            n = end - starts[-1] + 1
            if n > self.batch_size or (self.run_tokens is not None and n * lengths[order[end]] > self.run_tokens):
                starts.append(end)
        for s, e in zip(starts, [*starts[1:], len(order)]):
            sel = order[s:e]
            feed = self.encoder.pad([windows[i] for i in sel])
            logits = session.run(None, {k: v for k, v in feed.items() if k in self.input_names})[0]
            out[sel] = 1.0 / (1.0 + np.exp(-logits))
        return out

    def default_thresholds(self, rail: Rail) -> Mapping[str, float]:
        """The calibrated thresholds of ``beaverguard.json`` for a rail (a policy may override them)."""
        return self.spec.thresholds[rail]

