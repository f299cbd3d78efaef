"""Re-evaluate one model many times with a few layers swapped, reusing what did not change.

An interactive explorer asks the same question over and over: "what is the accuracy if *these*
layers are replaced?". :class:`IncrementalEvaluator` answers it without rebuilding or re-running
the parts that stay the same:

- **In-place swaps.** It keeps one working copy of the model; :meth:`~IncrementalEvaluator.swap`
  replaces only the named layers (e.g. the factorised layers whose rank changed), instead of
  deep-copying the whole model per choice.
- **Cached activations before the first changed layer.** The model is traced once with
  ``torch.fx``; evaluating a registered input set records the activations that cross the point
  just before each swappable layer (every value produced before it and used after it). The next
  evaluation resumes from the deepest recorded point that lies before every layer changed since
  then, so moving the rank of a late layer re-runs only the tail of the network. Within a memory
  budget, an input set first keeps the point where its recent runs had to begin (the next move of
  the same slider begins there too), if enough compute runs before it, then the deepest points
  (their activations are smaller and save more compute).
- **Faster inference.** BatchNorm layers that directly follow a convolution are folded into it
  (``torch.nn.utils.fusion.fuse_conv_bn_eval``), convolutions and inputs use the channels-last
  memory format, inputs stay on the model's device, and everything runs under
  ``torch.inference_mode``. Folding changes the float rounding, not the function: logits agree with
  the plain model to float32 precision (the tests check this).

A model that ``torch.fx`` cannot trace still works: its working copy is swapped in place and run
as a whole, without cached activations or folding.
"""

from __future__ import annotations

import copy
import itertools
import operator
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from smoothviz._validation import check_choice, check_int, check_number
from smoothviz.explore.input_set import CacheInfo, InputSet
from smoothviz.explore.module_tools import (
    foldable_batchnorm,
    module_device,
    same_module,
    tensor_bytes,
    with_batchnorm_folded,
    writes_in_place,
)
from smoothviz.layers import set_submodule

# Keep activations before a just-changed layer only if at least this share of the compute runs
# before it (else recomputing is cheap, and the memory is better spent on deeper points).
MIN_SAVED_WORK = 0.1
MAX_WANTED = 2  # per input set, the recent start points that get memory first


class IncrementalEvaluator:
    """A working copy of ``model`` whose layers can be swapped in place and re-evaluated fast.

    Parameters
    ----------
    model
        The network (not modified; a working copy is made, in eval mode, without gradients).
    swappable
        Names of the modules that :meth:`swap` may replace (e.g. the layers a compression method
        changes). Cached activations are kept at the point just before each of them. ``None``:
        every leaf module may be swapped, and activations are kept before each ``Conv2d`` and
        ``Linear``.
    batch_size
        Images per forward pass.
    channels_last
        Run 4-d inputs and convolutions in the channels-last memory format; ``None`` (default):
        when the model has a ``Conv2d``.
    fold_batchnorm
        Fold a BatchNorm that directly follows a convolution into it.
    cache_mb
        Memory for cached activations, in MiB, over all input sets (0: no caching).

    Examples
    --------
    >>> ev = IncrementalEvaluator(model, ["features.3"])                # doctest: +SKIP
    >>> ev.add_inputs("test", x_test, y_test)                           # doctest: +SKIP
    >>> ev.swap({"features.3": smaller_conv})                           # doctest: +SKIP
    >>> ev.evaluate("test")["accuracy"]                                 # doctest: +SKIP
    >>> info = ev.cache_info("test")  # it resumed just before the swapped layer # doctest: +SKIP
    >>> info.last_start == ev.resume_point("features.3")                # doctest: +SKIP
    True
    """

    def __init__(
        self,
        model: nn.Module,
        swappable: Sequence[str] | None = None,
        *,
        batch_size: int = 128,
        channels_last: bool | None = None,
        fold_batchnorm: bool = True,
        cache_mb: float = 512.0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        batch_size = check_int("batch_size", batch_size, low=1)
        cache_mb = check_number("cache_mb", cache_mb, low=0)
        check_choice("channels_last", channels_last, (None, True, False))
        self.device = module_device(model)
        self.batch_size = batch_size
        self._cache_bytes = int(cache_mb * 2**20)
        if channels_last is None:
            channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
        self.channels_last = channels_last
        self._work = copy.deepcopy(model).eval()
        self._work.requires_grad_(False)
        for m in self._work.modules():  # a cached activation must never be overwritten in place
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False
        self._sets: dict[str, InputSet] = {}
        self._versions = itertools.count(1)
        self._version: dict[str, int] = {}  # slot -> version of the module installed there
        self.copies_cached_values = False  # set by tracing
        self.traced = self._trace(fold_batchnorm)
        names = self._swappable_names() if self.traced else self._leaf_names()
        if swappable is None:
            self.swappable = names
            anchors = [
                n for n in names if isinstance(self._source_module(n), (nn.Conv2d, nn.Linear))
            ]
        else:
            swappable = list(swappable)
            unknown = [n for n in swappable if n not in names]
            if unknown:
                raise ValueError(
                    f"swappable: {unknown} are not modules called by this model's forward; "
                    f"allowed names: {names}"
                )
            self.swappable = anchors = swappable
        # Positions (node indices) just before a swappable layer: where evaluation may resume.
        self._resume_points = (
            sorted({self._position[self._slot_of[n]] for n in anchors}) if self.traced else []
        )

    @property
    def cache_bytes(self) -> int:
        """Memory for cached activations, in bytes, over all input sets; setting it re-plans
        which points each input set records."""
        return self._cache_bytes

    @cache_bytes.setter
    def cache_bytes(self, value: int) -> None:
        self._cache_bytes = check_int("cache_bytes", value, low=0)
        self._plan_cache()

    def resume_point(self, name: str) -> int:
        """The point just before the swappable layer ``name`` (as :class:`CacheInfo` numbers
        points): where an evaluation resumes when ``name`` is the first layer changed."""
        if name not in self.swappable:
            raise ValueError(f"resume_point: {name!r} is not swappable; allowed: {self.swappable}")
        if not self.traced:
            raise ValueError("resume_point: this model could not be traced; it runs as a whole")
        return self._position[self._slot_of[name]]

    def cache_info(self, key: str) -> CacheInfo:
        """What is kept and was done for the input set ``key`` (see :class:`CacheInfo`)."""
        if key not in self._sets:
            raise KeyError(f"no input set {key!r}; registered: {list(self._sets)}")
        s = self._sets[key]
        point_bytes, work_before = {}, {}
        if self.traced and self._resume_points:
            self._probe()
            point_bytes = {p: self._per_image[p] * len(s.y) for p in self._resume_points}
            work_before = dict(self._work_before)
        return CacheInfo(
            runs=s.runs,
            last_start=s.last_start,
            last_batches=s.last_batches,
            remembered=s.memo is not None and s.memo[0] == self._state(),
            points=tuple(self._resume_points),
            planned=frozenset(s.record),
            stored=frozenset(s.cache),
            wanted=tuple(s.wanted),
            point_bytes=point_bytes,
            work_before=work_before,
        )

    # ------------------------------------------------------------------ set-up
    def _leaf_names(self) -> list[str]:
        return [n for n, m in self._work.named_modules() if n and not list(m.children())]

    def _swappable_names(self) -> list[str]:
        # A module whose tensors the forward also reads directly (get_attr) stays as it is.
        read = [str(n.target) for n in self._nodes if n.op == "get_attr"]
        return [t for t in self._slot_of if not any(r.startswith(t + ".") for r in read)]

    def _source_module(self, name: str) -> nn.Module:
        return self._source[name] if self.traced else self._work.get_submodule(name)

    def _convert(self, module: nn.Module) -> nn.Module:
        """``module`` (a copy the evaluator owns) ready to run: on the device, in its memory
        format, without in-place operations (a cached activation must never be overwritten)."""
        for m in module.modules():
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module.requires_grad_(False)

    def _trace(self, fold_batchnorm: bool) -> bool:
        try:
            graph = fx.Tracer().trace(self._work)
        except Exception:  # data-dependent control flow etc.: run the model as a whole
            self._work = self._convert(self._work)
            return False
        nodes = list(graph.nodes)
        if sum(n.op == "placeholder" for n in nodes) != 1 or nodes[0].op != "placeholder":
            self._work = self._convert(self._work)
            return False
        modules = dict(self._work.named_modules())
        calls: dict[str, int] = {}
        for n in nodes:
            if n.op == "call_module":
                calls[str(n.target)] = calls.get(str(n.target), 0) + 1
        # slot = one module call in the run (a conv with its folded BatchNorm is one slot)
        self._source: dict[str, nn.Module] = {}
        self._slot_of: dict[str, str] = {}
        self._bn_of: dict[str, str] = {}
        for n in nodes:
            if n.op != "call_module":
                continue
            target = str(n.target)
            self._source[target] = modules[target]
            self._slot_of.setdefault(target, target)
            bn = foldable_batchnorm(n, modules, calls) if fold_batchnorm else None
            if bn is not None:
                self._bn_of[target] = str(bn.target)
                self._slot_of[str(bn.target)] = target
                self._source[str(bn.target)] = modules[str(bn.target)]
                bn.replace_all_uses_with(n)
                graph.erase_node(bn)
        self._nodes = list(graph.nodes)
        self._frontiers: dict[int, list[fx.Node]] = {}
        self._index = {n: i for i, n in enumerate(self._nodes)}
        self._position: dict[str, int] = {}
        for i, n in enumerate(self._nodes):
            if n.op == "call_module":
                self._position.setdefault(str(n.target), i)
        self._run_modules: dict[str, nn.Module] = {}
        for slot in {self._slot_of[t] for t in self._source}:
            self._install(slot)
        # The model's own modules: a slot given them back runs its first copy again, under its
        # first version, so activations cached for the model stay valid (a sweep evaluates many
        # variants of one model, each changing other layers).
        self._base_source = dict(self._source)
        self._base_run = {s: (m, self._version[s]) for s, m in self._run_modules.items()}
        # After node i runs, these values are no longer needed.
        last_use: dict[fx.Node, int] = {}
        for i, n in enumerate(self._nodes):
            for arg in n.all_input_nodes:
                last_use[arg] = i
        self._free_after: dict[int, list[fx.Node]] = {}
        for n, i in last_use.items():
            self._free_after.setdefault(i, []).append(n)
        # The forward writes into some values in place: cached ones are copied before each reuse.
        self.copies_cached_values = any(writes_in_place(n, self._run_modules) for n in self._nodes)
        return True

    def _install(self, slot: str) -> None:
        bn = self._bn_of.get(slot)
        module = with_batchnorm_folded(self._source[slot], self._source[bn] if bn else None)
        self._run_modules[slot] = self._convert(module)
        self._version[slot] = next(self._versions)

    def _run_module(self, node: fx.Node, *args: Any, **kwargs: Any) -> Any:
        return self._run_modules[self._slot_of[str(node.target)]](*args, **kwargs)

    def _frontier(self, position: int) -> list[fx.Node]:
        """Values produced before ``position`` and used at or after it (computed once)."""
        if position not in self._frontiers:
            self._frontiers[position] = [
                n
                for n in self._nodes[:position]
                if any(self._index[u] >= position for u in n.users)
            ]
        return self._frontiers[position]

    def _prefix(self, position: int) -> tuple[int, ...]:
        """Versions of every slot run before ``position``: cached values there are valid while
        these are unchanged."""
        return tuple(
            v for s, v in sorted(self._version.items()) if self._position.get(s, 0) < position
        )

    # ------------------------------------------------------------------ public API
    def add_inputs(self, key: str, x: torch.Tensor, y: torch.Tensor) -> None:
        """Register an input set (moved once to the model's device and memory format)."""
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or len(x) != len(y):
            raise ValueError("add_inputs: x and y must be tensors of the same length")
        if len(y) == 0:
            raise ValueError("add_inputs: the input set is empty")
        x = x.to(self.device)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        batches = [slice(s, s + self.batch_size) for s in range(0, len(y), self.batch_size)]
        self._sets[key] = InputSet(x, y.to(self.device), batches)
        self._plan_cache()

    def _plan_cache(self) -> None:
        """Choose which resume points each input set records, within the memory budget.

        First, for each input set, the points where its recent runs had to begin (the first layer
        changed since its previous run: the next moves most likely change the same layers),
        unless less than ``MIN_SAVED_WORK`` of the network's compute runs before them; then the
        deepest points (small activations that save the most compute).
        """
        for s in self._sets.values():
            s.record.clear()
        if not self.traced or not self._resume_points or self.cache_bytes <= 0 or not self._sets:
            return
        self._probe()
        order = [
            (s, p)
            for s in self._sets.values()
            for p in s.wanted
            if self._work_before.get(p, 0.0) >= MIN_SAVED_WORK
        ]
        order += [(s, p) for p in reversed(self._resume_points) for s in self._sets.values()]
        left = self.cache_bytes
        for s, position in order:
            need = self._per_image[position] * len(s.y)
            if position not in s.record and need <= left:
                s.record.add(position)
                left -= need
        for s in self._sets.values():  # forget what is no longer planned
            s.cache = {p: v for p, v in s.cache.items() if p in s.record}

    def _note_start(self, s: InputSet) -> None:
        """Remember where this run has to begin (the first slot changed since the set's last
        run) and give that point memory first."""
        if s.seen is not None:
            changed = [self._position[k] for k, v in self._version.items() if s.seen.get(k) != v]
            if changed:
                first = min(changed)
                # the resume point at or before the first change
                points = [p for p in self._resume_points if p <= first]
                if points and (not s.wanted or s.wanted[0] != points[-1]):
                    s.wanted = [points[-1]] + [w for w in s.wanted if w != points[-1]]
                    del s.wanted[MAX_WANTED:]
                    self._plan_cache()
        s.seen = dict(self._version)

    def _probe(self) -> None:
        """Per resume point: bytes per image of the values crossing it, and the share of the
        network's multiply-adds (convolutions and linear layers) that run before it."""
        if hasattr(self, "_per_image"):
            return
        probe = next(iter(self._sets.values())).x[:1]
        record = {p: [] for p in self._resume_points}
        macs: dict[int, int] = {}
        run_module = self._run_module

        def counting(node: fx.Node, *args: Any, **kwargs: Any) -> Any:
            out = run_module(node, *args, **kwargs)
            weight = getattr(self._source.get(str(node.target)), "weight", None)
            if isinstance(out, torch.Tensor) and isinstance(weight, torch.Tensor):
                macs[self._index[node]] = out.numel() * weight[0].numel()
            return out

        self._run_module = counting
        try:
            with torch.inference_mode():
                self._run({self._nodes[0]: probe}, 1, record)
        finally:
            del self._run_module  # back to the method
        total = max(1, sum(macs.values()))
        self._per_image = {p: tensor_bytes(v[0]) for p, v in record.items()}
        self._work_before = {
            p: sum(m for i, m in macs.items() if i < p) / total for p in self._resume_points
        }

    def swap(self, modules: Mapping[str, nn.Module]) -> None:
        """Replace the named modules by (copies of) the given ones; the rest stays as it is.

        Parameters
        ----------
        modules
            ``{name: module}`` for names in :attr:`swappable`. A module is copied (its folded,
            channels-last copy is what runs), so the caller's module is never modified.
        """
        unknown = [n for n in modules if n not in self.swappable]
        if unknown:
            raise ValueError(f"swap: {unknown} are not swappable; allowed: {self.swappable}")
        for name, module in modules.items():
            if not isinstance(module, nn.Module):
                raise TypeError(f"swap: {name!r} must map to an nn.Module, got {module!r}")
        if not modules:
            return
        with torch.no_grad():
            if not self.traced:
                for name, module in modules.items():
                    new = self._convert(copy.deepcopy(module).eval())
                    set_submodule(self._work, name, new)
                    self._version[name] = next(self._versions)
                return
            for name, module in modules.items():
                self._source[name] = module
            slots = {self._slot_of[n] for n in modules}
            for slot in slots:
                members = [slot] + ([self._bn_of[slot]] if slot in self._bn_of else [])
                if all(self._source[m] is self._base_source[m] for m in members):
                    self._run_modules[slot], self._version[slot] = self._base_run[slot]
                else:
                    self._install(slot)

    def load(self, variant: nn.Module) -> list[str]:
        """Swap in every swappable module of ``variant`` that differs from the installed one.

        ``variant`` is a changed copy of the model with the same module names (e.g. a pruned
        copy). Returns the names that were swapped. A module equal to the model's own is swapped
        back to it, under its first version, so the activations cached for the model before it
        are used again.
        """
        changed = {}
        for name in self.swappable:
            new = variant.get_submodule(name)
            old = self._source_module(name)
            if new is not old and not same_module(new, old):
                base = self._base_source.get(name) if self.traced else None
                changed[name] = base if base is not None and same_module(new, base) else new
        if changed:
            self.swap(changed)
        return list(changed)

    def logits(self, key: str) -> torch.Tensor:
        """Logits of the registered input set ``key`` (in its order)."""
        with torch.inference_mode():
            return torch.cat([out for out, _ in self._outputs(key)])

    def evaluate(self, key: str, *, per_image: bool = False) -> dict[str, Any]:
        """Accuracy, mean cross-entropy and size of the input set ``key``, as
        :func:`smoothviz.measure.evaluate` computes them; with ``per_image``, also ``"correct"``:
        a bool tensor (on the CPU) saying which inputs were classified correctly."""
        steps = self.evaluate_steps(key, per_image=per_image)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def evaluate_steps(
        self, key: str, *, per_image: bool = False
    ) -> Generator[float, None, dict[str, Any]]:
        """:meth:`evaluate` one batch at a time: yields the fraction done, returns the result.

        Between steps the caller's code runs normally (inference mode is entered per batch),
        so an event loop can handle other work; a generator closed before the end leaves no
        cached activations behind.
        """
        if key not in self._sets:
            raise KeyError(f"no input set {key!r}; registered: {list(self._sets)}")
        state = self._state()
        s = self._sets[key]
        if s.memo is not None and s.memo[0] == state:  # nothing changed since: same answer
            return self._answer(s.memo[1], per_image)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        hits = []
        outputs = self._outputs(key)
        done = 0
        while True:
            with torch.inference_mode():
                try:
                    logits, y = next(outputs)
                except StopIteration:
                    break
                logits = logits.float()
                loss += F.cross_entropy(logits, y, reduction="sum").double()
                hit = logits.argmax(1) == y
                correct += hit.sum()
                hits.append(hit.cpu())
            done += len(y)
            if done < len(s.y):
                yield done / len(s.y)
        n = len(s.y)
        result = {"accuracy": correct.item() / n, "loss": loss.item() / n, "n": n}
        result["correct"] = torch.cat(hits)
        s.memo = (state, result)
        return self._answer(result, per_image)

    @staticmethod
    def _answer(result: Mapping[str, Any], per_image: bool) -> dict[str, Any]:
        out = {k: v for k, v in result.items() if k != "correct"}
        if per_image:
            out["correct"] = result["correct"].clone()
        return out

    def _state(self) -> tuple[int, ...]:
        return tuple(v for _, v in sorted(self._version.items()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The working model's output on ``x`` (no caching), e.g. to compare with another model."""
        x = x.to(self.device)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if not self.traced:
                return self._work(x)
            return self._run({self._nodes[0]: x}, 1, {})

    __call__ = forward

    # ------------------------------------------------------------------ running
    def _outputs(self, key: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch, the logits and labels of input set ``key`` (run under inference mode)."""
        if key not in self._sets:
            raise KeyError(f"no input set {key!r}; registered: {list(self._sets)}")
        s = self._sets[key]
        state = self._state()

        def unchanged() -> None:  # a half-old, half-new answer must never come out
            if self._state() != state:
                raise RuntimeError("the model was swapped while it was being evaluated")

        s.runs += 1
        s.last_start, s.last_batches = 0, 0
        if not self.traced:
            for b in s.batches:
                unchanged()
                out = self._work(s.x[b])
                s.last_batches += 1
                yield out, s.y[b]
            return
        self._note_start(s)
        start, values = 1, None
        for position in sorted(s.cache, reverse=True):  # the deepest still-valid resume point
            prefix, stored = s.cache[position]
            if prefix == self._prefix(position):
                start, values = position, stored
                break
        s.last_start = start if values is not None else 0
        record_at = {p: [] for p in s.record if p > start}
        frontier = self._frontier(start) if values is not None else []
        for i, b in enumerate(s.batches):
            unchanged()
            if values is None:
                env = {self._nodes[0]: s.x[b]}
            else:
                env = dict(zip(frontier, self._fresh(values[i]), strict=True))
            out = self._run(env, start, record_at)
            s.last_batches += 1
            yield out, s.y[b]
        unchanged()
        for position, stored in record_at.items():
            s.cache[position] = (self._prefix(position), stored)

    def _fresh(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        if not self.copies_cached_values:
            return values
        return tuple(v.clone() if isinstance(v, torch.Tensor) else v for v in values)

    def _run(
        self, env: dict[fx.Node, Any], start: int, record: Mapping[int, list[tuple[Any, ...]]]
    ) -> Any:
        """Run the nodes from index ``start`` on; ``env`` holds the values crossing ``start``.

        At each position in ``record``, the values crossing it are appended to its list.
        """
        load: Callable[[fx.Node], Any] = env.__getitem__
        nodes = self._nodes
        for i in range(start, len(nodes)):
            if i in record:
                record[i].append(self._fresh(tuple(env[n] for n in self._frontier(i))))
            node = nodes[i]
            op = node.op
            if op == "output":
                return fx.node.map_arg(node.args[0], load)
            args = fx.node.map_arg(node.args, load)
            kwargs = fx.node.map_arg(node.kwargs, load)
            if op == "call_module":
                out = self._run_module(node, *args, **kwargs)
            elif op == "call_function":
                out = node.target(*args, **kwargs)
            elif op == "call_method":
                out = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif op == "get_attr":
                out = operator.attrgetter(str(node.target))(self._work)
            else:  # pragma: no cover - a second placeholder was rejected at tracing
                raise RuntimeError(f"unexpected node {node.format_node()}")
            env[node] = out
            for dead in self._free_after.get(i, ()):
                env.pop(dead, None)
        raise RuntimeError("the traced graph has no output node")  # pragma: no cover
