"""Low-rank factorization: truncated SVD of Linear layers and 1x1 convolutions, and Tucker-2
(HOSVD on the output and input channel modes) of kxk convolutions as 1x1 -> kxk core -> 1x1.

A rank is fixed (`rank`, clipped to each layer's full rank) or chosen per layer and mode as the
smallest that keeps `energy` of the squared singular values. Layers whose factorization would not
have fewer parameters than the original are left alone (and reported as skipped).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgemed.compress.method import Method, Outcome, tune
from edgemed.errors import InputError
from edgemed.models.arch import apply_edit, compressed_spec


@dataclass(frozen=True)
class RankRule:
    """Exactly one of a fixed rank or an energy fraction in (0, 1]."""

    rank: int | None = None
    energy: float | None = None

    def choose(self, singular_values) -> int:
        full = len(singular_values)
        if self.rank is not None:
            return max(1, min(self.rank, full))
        e = (singular_values.double() ** 2).cumsum(0)
        frac = e / e[-1].clamp_min(1e-30)
        return max(1, min(full, int((frac < self.energy - 1e-12).sum()) + 1))


def factorize(model, method: str, rule: RankRule, require_saving: bool = True) -> tuple[list, list]:
    """Factor every eligible layer of `model` in place ('svd' or 'tucker').

    Returns (architecture edits, per-layer report with ranks, params before/after or skip reason).
    """
    edits, report = [], []
    for path, m in list(_eligible(model, method)):
        edit, before, after = _plan(path, m, method, rule)
        if require_saving and after >= before:
            report.append({"path": path, "skipped": "no parameter saving", "params": before})
            continue
        _, new = apply_edit(model, edit)
        (_fill_svd if method == "svd" else _fill_tucker)(m, new, edit)
        edits.append(edit)
        report.append({**edit, "params_before": before, "params_after": after})
    return edits, report


def _eligible(model, method: str):
    from torch import nn

    for path, m in model.named_modules():
        conv = isinstance(m, nn.Conv2d) and m.groups == 1
        pointwise = conv and m.kernel_size == (1, 1)
        if method == "svd" and (isinstance(m, nn.Linear) or pointwise):
            yield path, m
        if method == "tucker" and conv and not pointwise:
            yield path, m


def _plan(path: str, m, method: str, rule: RankRule) -> tuple[dict, int, int]:
    import torch

    w = m.weight.detach()
    bias = 0 if m.bias is None else m.bias.numel()
    before = w.numel() + bias
    if method == "svd":
        mat = w.reshape(w.shape[0], -1)
        r = rule.choose(torch.linalg.svdvals(mat))
        return {"op": "svd", "path": path, "rank": r}, before, r * sum(mat.shape) + bias
    cout, cin, kh, kw = w.shape
    r_out = rule.choose(torch.linalg.svdvals(_unfold(w, 0)))
    r_in = rule.choose(torch.linalg.svdvals(_unfold(w, 1)))
    after = cin * r_in + r_in * r_out * kh * kw + r_out * cout + bias
    return {"op": "tucker", "path": path, "rank_in": r_in, "rank_out": r_out}, before, after


def _unfold(w, mode: int):
    return w.movedim(mode, 0).reshape(w.shape[mode], -1)


def _fill_svd(old, new, edit: dict) -> None:
    """W = U S V^T -> reduce = sqrt(S) V^T (r x in), expand = U sqrt(S) (out x r)."""
    import torch

    r = edit["rank"]
    w = old.weight.detach()
    mat = w.reshape(w.shape[0], -1).double()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    root = s[:r].sqrt()
    reduce_w = (root[:, None] * vh[:r]).float()
    expand_w = (u[:, :r] * root[None, :]).float()
    first, second = new[0], new[1]
    with torch.no_grad():
        first.weight.copy_(reduce_w.reshape(first.weight.shape))
        second.weight.copy_(expand_w.reshape(second.weight.shape))
        if old.bias is not None:
            second.bias.copy_(old.bias)


def _fill_tucker(old, new, edit: dict) -> None:
    """HOSVD: U_out, U_in from the mode-0/1 unfoldings; core = W x0 U_out^T x1 U_in^T."""
    import torch

    w = old.weight.detach().double()
    u_out = torch.linalg.svd(_unfold(w, 0), full_matrices=False)[0][:, : edit["rank_out"]]
    u_in = torch.linalg.svd(_unfold(w, 1), full_matrices=False)[0][:, : edit["rank_in"]]
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
    first, mid, last = new[0], new[1], new[2]
    with torch.no_grad():
        first.weight.copy_(u_in.T.float()[:, :, None, None])
        mid.weight.copy_(core.float())
        last.weight.copy_(u_out.float()[:, :, None, None])
        if old.bias is not None:
            last.bias.copy_(old.bias)


def _check_rank(req) -> None:

    if (req.rank is None) == (req.energy is None):
        raise InputError(
            f"--method {req.method} needs exactly one of --rank R or --energy E (0 < E <= 1)"
        )
    if req.rank is not None and req.rank < 1:
        raise InputError(f"--rank must be >= 1, got {req.rank}")
    if req.energy is not None and not 0.0 < req.energy <= 1.0:
        raise InputError(f"--energy must be in (0, 1], got {req.energy}")


def _runner(method: str):
    def run(t, ref, ds, req):

        edits, layers = factorize(t.module, method, RankRule(req.rank, req.energy))
        if not edits:
            flag = f"--rank {req.rank}" if req.rank is not None else f"--energy {req.energy}"
            kind = "Linear or 1x1 conv" if method == "svd" else "kxk conv"
            raise InputError(
                f"no {kind} layer of {req.model} gets smaller at {flag}; choose a lower rank or energy"
            )
        result = tune(t, ds, req, f"{method} fine-tune")
        spec = compressed_spec(t.spec, t.contract.channels, t.contract.num_outputs, edits)
        return Outcome(t.module, spec, {"layers": layers}, result)

    run.__doc__ = f"Low-rank factorization by {method}, then fine-tuning."
    return run


SVD = Method("svd", _runner("svd"), settings=("rank", "energy"), epochs=5, check=_check_rank)
TUCKER = Method(
    "tucker", _runner("tucker"), settings=("rank", "energy"), epochs=5, check=_check_rank
)
