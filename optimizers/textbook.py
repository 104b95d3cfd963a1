"""Adam and SGD with momentum exactly as the textbook writes them.

Each keeps the state the algorithm needs and nothing else: Adam two tensors per
parameter (first moment ``m``, second moment ``v``), SGDM one (``m``), plus an integer
step count. ``foreach=False`` updates one parameter at a time; ``foreach=True`` updates
many parameters per call with the multi-tensor ``torch._foreach_*`` kernels.

``weight_decay`` (lambda, default 0) is L2 regularisation added to the gradient before the
update, g <- g + lambda w, exactly as ``torch.optim.SGD`` and ``torch.optim.Adam`` apply it
(not AdamW's decoupled decay); with lambda = 0 the equations are the ones above unchanged.

On a GPU one foreach call covers the whole group: each call is a few kernel launches
whatever the list's length, which is the point of the multi-tensor path. On the CPU a foreach
call is a loop over the list, so one call over every parameter makes each of the update's
eight passes sweep all of p, g, m and v through main memory and allocates the temporary of
its bias correction for the whole model at once (fresh pages from the kernel, zeroed, every
step), where the per-parameter loop works on one cache-sized tensor at a time. The CPU path
therefore applies the same foreach calls to consecutive buckets of at most
``CPU_FOREACH_BUCKET_BYTES`` of parameters: identical arithmetic, element for element, with
the working set of a bucket in the last-level cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor
from torch.optim import Optimizer

from optimizers.hyperparameters import check_beta, check_eps, check_lr, check_weight_decay

#: Parameter bytes per foreach call on the CPU (see the module docstring); with g, m, v and a
#: temporary beside them the working set is about five times this.
CPU_FOREACH_BUCKET_BYTES = 4 * 2**20


def foreach_buckets(params: list[Tensor]) -> Iterator[slice]:
    """Where ``params`` is split for foreach calls, as slices of it: whole on a GPU; on the
    CPU, consecutive runs of at most ``CPU_FOREACH_BUCKET_BYTES`` (a larger tensor is a
    bucket of its own)."""
    if not params or params[0].device.type != "cpu":
        yield slice(0, len(params))
        return
    start, size = 0, 0
    for index, p in enumerate(params):
        nbytes = p.numel() * p.element_size()
        if index > start and size + nbytes > CPU_FOREACH_BUCKET_BYTES:
            yield slice(start, index)
            start, size = index, 0
        size += nbytes
    yield slice(start, len(params))


class _Textbook(Optimizer):
    """Shared step(): lazy state creation, then the subclass's update on a param group."""

    buffers: tuple[str, ...] = ()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = _decayed([p.grad for p in params], params, group["weight_decay"], group["foreach"])
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    for buffer in self.buffers:
                        state[buffer] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            if group["foreach"]:
                for bucket in foreach_buckets(params):
                    self._foreach_update(group, params[bucket], grads[bucket])
            else:
                for p, g in zip(params, grads, strict=True):
                    self._update(group, p, g, self.state[p])
        return loss

    def _update(self, group: dict, p: Tensor, g: Tensor, state: dict) -> None:
        raise NotImplementedError

    def _foreach_update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        raise NotImplementedError


def _decayed(grads: list[Tensor], params: list[Tensor], weight_decay: float, foreach: bool) -> list[Tensor]:
    """g + weight_decay * w per parameter, as new tensors (``p.grad`` is left as backward
    wrote it); the gradients themselves when weight_decay is 0."""
    if weight_decay == 0:
        return grads
    if foreach:
        return torch._foreach_add(grads, params, alpha=weight_decay)
    return [g.add(p, alpha=weight_decay) for g, p in zip(grads, params, strict=True)]


class Adam(_Textbook):
    """g <- g + lambda w;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  m^ = m / (1 - b1^t);
    v^ = v / (1 - b2^t);  w <- w - lr m^ / (sqrt(v^) + eps).

    A complex parameter is a pair of real ones (its real and imaginary parts), as in
    torch.optim.Adam: m and v stay complex tensors shaped like it, holding per-part moments.
    """

    buffers = ("m", "v")

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool = False,
    ) -> None:
        check_lr(lr)
        check_beta("betas[0]", betas[0])
        check_beta("betas[1]", betas[1])
        check_eps(eps)
        check_weight_decay(weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    def _update(self, group: dict, p: Tensor, g: Tensor, state: dict) -> None:
        beta1, beta2 = group["betas"]
        p, g, m, v = _real((p, g, state["m"], state["v"]))
        t = state["step"]
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.div(1 - beta2**t).sqrt_().add_(group["eps"])
        p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**t))

    def _foreach_update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        steps = [self.state[p]["step"] for p in params]
        grads = _real(grads)
        ms = _real([self.state[p]["m"] for p in params])
        vs = _real([self.state[p]["v"] for p in params])
        params = _real(params)
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, grads, alpha=1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        denoms = torch._foreach_div(vs, [1 - beta2**t for t in steps])
        torch._foreach_sqrt_(denoms)
        torch._foreach_add_(denoms, group["eps"])
        torch._foreach_addcdiv_(params, ms, denoms, [-group["lr"] / (1 - beta1**t) for t in steps])


def _real(tensors: Iterable[Tensor]) -> list[Tensor]:
    """Complex tensors as views of (real, imaginary) pairs, as torch.optim.Adam treats them.

    Adam's second moment is then per real component (re(g)^2 and im(g)^2), not the complex
    square g * g, whose real part can be negative; the updates write through the views.
    """
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


class SGDM(_Textbook):
    """g <- g + lambda w;  m <- beta m + g;  w <- w - lr m  (no dampening, no Nesterov)."""

    buffers = ("m",)

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        foreach: bool = False,
    ) -> None:
        check_lr(lr)
        check_beta("momentum", momentum)
        check_weight_decay(weight_decay)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=foreach))

    def _update(self, group: dict, p: Tensor, g: Tensor, state: dict) -> None:
        m = state["m"]
        m.mul_(group["momentum"]).add_(g)
        p.add_(m, alpha=-group["lr"])

    def _foreach_update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        ms = [self.state[p]["m"] for p in params]
        torch._foreach_mul_(ms, group["momentum"])
        torch._foreach_add_(ms, grads)
        torch._foreach_add_(params, ms, alpha=-group["lr"])


# The compiled optimizers. Their update is written over whole lists of tensors with the
# multi-tensor ``torch._foreach_*`` operators, as torch.optim's own foreach paths are, so that
# Inductor sees one elementwise program per list, not one per parameter: it fuses each
# tensor's operations vertically (every tensor read and written once) and, on a GPU, the
# tensors horizontally into a few "combo" kernels (``triton_for_fused_*``, up to
# ``torch._inductor.config.combo_kernel_max_num_args`` pointers each). A Python loop over the
# parameters instead unrolls into one kernel per parameter: 161 launches a step for resnet50,
# each a few microseconds of the device's time however small its tensor, and tens of
# microseconds of the host's.


def _adam_scalars(steps: list[Tensor], lr: Tensor, beta1: float, beta2: float) -> tuple[list[Tensor], list[Tensor]]:
    """t <- t + 1 on each parameter's 0-d step count, then per parameter the 0-d tensors
    1 - b2^t and lr / (1 - b1^t). Compiled as a graph of its own: its results are outputs, so
    Inductor writes them once and the update reads them, where inside the update's graph it
    inlines them and recomputes b^t for every element (a float64 ``pow`` per element; 4x
    slower on the CPU)."""
    torch._foreach_add_(steps, 1)
    bias_corrections1 = torch._foreach_pow(beta1, steps)
    bias_corrections2 = torch._foreach_pow(beta2, steps)
    for corrections in (bias_corrections1, bias_corrections2):
        torch._foreach_neg_(corrections)
        torch._foreach_add_(corrections, 1)
    step_sizes = torch._foreach_div(bias_corrections1, lr)
    torch._foreach_reciprocal_(step_sizes)
    return bias_corrections2, step_sizes


def _adam_update(
    params: list[Tensor],
    grads: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    bias_corrections2: list[Tensor],
    step_sizes: list[Tensor],
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """Textbook Adam (``Adam``'s equations) on lists of tensors, for ``torch.compile``, with
    the per-parameter 0-d scalars from ``_adam_scalars`` (tensors, so one compiled graph
    serves every step and every learning rate: Python numbers would be specialised, a
    recompile per new value)."""
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(ms, beta1)
    torch._foreach_add_(ms, grads, alpha=1 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
    denoms = torch._foreach_div(vs, bias_corrections2)
    torch._foreach_sqrt_(denoms)
    torch._foreach_add_(denoms, eps)
    updates = torch._foreach_div(ms, denoms)
    torch._foreach_mul_(updates, step_sizes)
    torch._foreach_sub_(params, updates)


def _sgdm_update(
    params: list[Tensor],
    grads: list[Tensor],
    ms: list[Tensor],
    steps: list[Tensor],
    lr: Tensor,
    momentum: float,
    weight_decay: float,
) -> None:
    """Textbook SGDM (``SGDM``'s equations) on lists of tensors, for ``torch.compile`` (``lr``
    a 0-d tensor; ``steps`` count the updates, as the eager optimizers' integer step does)."""
    torch._foreach_add_(steps, 1)
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(ms, momentum)
    torch._foreach_add_(ms, grads)
    torch._foreach_sub_(params, torch._foreach_mul(ms, lr))


class _Compiled(_Textbook):
    """The textbook update of a whole param group through ``torch.compile``d functions over
    lists of tensors (see the comment above ``_adam_scalars``).

    Every tensor is read and written once (the compulsory traffic), in a few kernels per list
    on a GPU. The arithmetic is the textbook's equations; the bias corrections come from a
    0-d float64 step count per parameter (``state["step"]``, 8 bytes, as torch.optim keeps a
    0-d ``step`` tensor), and the learning rate from a 0-d tensor refreshed from
    ``group["lr"]`` every step, so learning-rate schedules do not recompile. The first step on
    a new set of shapes compiles (seconds to minutes): warm up before timing.
    """

    def __init__(self, params: Iterable, **hyperparameters: object) -> None:
        super().__init__(params, **hyperparameters)
        self._lr: dict[int, Tensor] = {}

    def _new_state(self, p: Tensor) -> dict:
        state = {"step": torch.zeros((), dtype=torch.float64, device=p.device)}
        state.update({b: torch.zeros_like(p, memory_format=torch.preserve_format) for b in self.buffers})
        return state

    def _lr_tensor(self, index: int, group: dict, device: torch.device) -> Tensor:
        lr = self._lr.get(index)
        if lr is None or lr.device != device:
            lr = self._lr[index] = torch.zeros((), dtype=torch.float64, device=device)
        lr.fill_(group["lr"])
        return lr

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                if not self.state[p]:
                    self.state[p] = self._new_state(p)
            self._compiled_update(group, params, self._lr_tensor(index, group, params[0].device))
        return loss

    def _compiled_update(self, group: dict, params: list[Tensor], lr: Tensor) -> None:
        raise NotImplementedError


class CompiledAdam(_Compiled, Adam):
    """Adam's textbook equations (see ``Adam``) through ``torch.compile``: two graphs a step,
    the per-parameter scalars and the update."""

    def __init__(self, params: Iterable, **hyperparameters: object) -> None:
        super().__init__(params, **hyperparameters)
        self._scalars = torch.compile(_adam_scalars, fullgraph=True)
        self._update_lists = torch.compile(_adam_update, fullgraph=True)

    def _compiled_update(self, group: dict, params: list[Tensor], lr: Tensor) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        bias_corrections2, step_sizes = self._scalars([s["step"] for s in states], lr, beta1, beta2)
        self._update_lists(
            _real(params),
            _real([p.grad for p in params]),
            _real([s["m"] for s in states]),
            _real([s["v"] for s in states]),
            bias_corrections2,
            step_sizes,
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
        )


class CompiledSGDM(_Compiled, SGDM):
    """SGDM's textbook equations (see ``SGDM``) through ``torch.compile``: one graph a step."""

    def __init__(self, params: Iterable, **hyperparameters: object) -> None:
        super().__init__(params, **hyperparameters)
        self._update_lists = torch.compile(_sgdm_update, fullgraph=True)

    def _compiled_update(self, group: dict, params: list[Tensor], lr: Tensor) -> None:
        grads, ms = [p.grad for p in params], [self.state[p]["m"] for p in params]
        steps = [self.state[p]["step"] for p in params]
        self._update_lists(params, grads, ms, steps, lr, group["momentum"], group["weight_decay"])
