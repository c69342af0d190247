"""The feature output: the penultimate features as a second output of the same ONNX graph.

Found by walking back from the logits through the final linear layer(s) (Gemm, MatMul, Add with
constant operands, Identity, Dropout, Reshape/Flatten of a 2-D tensor): the tensor where that walk
stops is what the head reads. `--feature-output NAME` names a tensor instead (a third-party graph
whose head is not linear), `--feature-output none` exports without one (input-space score only).
The logits stay output 0 and are computed by the same nodes: adding an output changes no value.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgemed.errors import InputError

FEATURE_OUTPUT = "features"
NONE = "none"
FEATURE_NODE = "edgemed_feature_output"
LINEAR_OPS = {"Gemm", "MatMul", "Add", "Identity", "Dropout"}


@dataclass(frozen=True)
class FeatureOutput:
    """What the artifact's second output is: its name, the graph tensor and how it was chosen."""

    name: str
    tensor: str
    how: str

    def to_dict(self) -> dict:
        return {"name": self.name, "index": 1, "tensor": self.tensor, "how": self.how}


def _constants(model) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def penultimate_tensor(model) -> str | None:
    """The tensor the final linear head reads (None when the head is not linear)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consts = _constants(model)
    inputs = {i.name for i in model.graph.input}
    tensor, seen_linear = model.graph.output[0].name, False
    while tensor in producers:
        node = producers[tensor]
        data = [i for i in node.input if i and i not in consts]
        if node.op_type not in LINEAR_OPS or len(data) != 1:
            break
        seen_linear |= node.op_type in ("Gemm", "MatMul")
        tensor = data[0]
    if not seen_linear or tensor in inputs or tensor == model.graph.output[0].name:
        return None
    return tensor


def with_feature_output(model, requested: str | None, where: str):
    """(model with a second output `features`, FeatureOutput) or (model, None) for `none` or a
    head that is not linear (then the guard uses the input-space score only, and says so)."""
    import onnx

    if requested == NONE:
        return model, None
    if requested:
        known = {o for n in model.graph.node for o in n.output} | {
            o.name for o in model.graph.output
        }
        if requested not in known:
            raise InputError(
                f"{where} has no tensor {requested!r} for --feature-output; name a node output "
                "(e.g. the input of the final linear layer) or pass --feature-output none"
            )
        tensor, how = requested, "named by --feature-output"
    else:
        tensor = penultimate_tensor(model)
        if tensor is None:
            return model, None
        how = "found: the input of the final linear layer"
    model.graph.node.append(onnx.helper.make_node("Identity", [tensor], [FEATURE_OUTPUT],
                                                  name=FEATURE_NODE))  # fmt: skip
    out = onnx.helper.make_tensor_value_info(
        FEATURE_OUTPUT, onnx.TensorProto.FLOAT, ["batch", "feature_size"]
    )
    rest = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend([rest[0], out, *rest[1:]])
    return model, FeatureOutput(FEATURE_OUTPUT, tensor, how)


def strip_feature_output(model):
    """An edgemed artifact's ONNX read again as a model source: its feature output removed (the
    logits are the model's output; a new export adds its own feature output)."""
    nodes = [n for n in model.graph.node if n.name == FEATURE_NODE]
    if not nodes:
        return model
    produced = set(nodes[0].output)
    keep = [o for o in model.graph.output if o.name not in produced]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    model.graph.node.remove(nodes[0])
    return model
