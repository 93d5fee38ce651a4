"""A float network's graph in float16 (`convert --float16`): half the download, and what GPUs,
CoreML and WebGPU run fastest.

onnxconverter-common's converter does the rewrite. Input and output stay float32 (a Cast at each
end), so a float16 artifact is fed and read exactly as the float32 one. Softmax stays float32:
float16 cannot hold probabilities below 6e-8, and the parity gate compares log-probabilities far
below that. Then the conversion is checked, because the converter is quiet about what it changes:
a weight beyond float16's range is refused, not clamped (the converter would clamp it and warn),
and no float32 tensor may be left in the network. How close the result must stay to Keras is
`onnx_mobilenets.parity`'s float16 bound, judged by the parity gate like any artifact.
"""

from __future__ import annotations

import warnings

import numpy as np

from onnx_mobilenets.errors import ConversionError

# Ops kept in float32 (their inputs cast up): only the softmax, see above.
FLOAT32_OPS = ("Softmax",)
FLOAT16_OPS = ("Cast",)  # what a float16 graph holds beyond the float32 one's ops: the casts at its ends
FLOAT16_MAX = float(np.finfo(np.float16).max)


def to_float16(proto):
    """`proto` (a float32 graph, the float artifacts' cleaned graph) with its network in float16."""
    from onnx import TensorProto, numpy_helper
    from onnxconverter_common import float16

    largest = {i.name: float(np.abs(numpy_helper.to_array(i)).max()) for i in proto.graph.initializer
               if i.data_type == TensorProto.FLOAT and i.dims}
    too_large = [(name, value) for name, value in largest.items() if value > FLOAT16_MAX]
    if too_large:
        name, value = too_large[0]
        raise ConversionError("float16", f"{len(too_large)} weight tensors hold values float16 cannot represent "
                                         f"(|{value:.4g}| in {name}; the largest float16 is {FLOAT16_MAX:g})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its per-value notes about tiny weights: they round as float16 does
        # min_positive_val=0 and max_finite_val=inf: plain rounding to float16, nothing moved by hand.
        converted = float16.convert_float_to_float16(proto, min_positive_val=0.0, max_finite_val=float("inf"),
                                                     keep_io_types=True, op_block_list=list(FLOAT32_OPS))
    _output_in_float32(converted)
    check_float16(converted)
    return converted


def _output_in_float32(proto) -> None:
    """The converter casts a float32 op's output back to float16 even when it is the graph's
    output (it does so for the Softmax): the graph's output is then float16. Drop that Cast."""
    from onnx import TensorProto

    graph = proto.graph
    for output in graph.output:
        producer = next((n for n in graph.node if output.name in n.output), None)
        if producer is None or producer.op_type != "Cast":
            continue
        if next(a.i for a in producer.attribute if a.name == "to") != TensorProto.FLOAT16:
            continue
        upstream = next(n for n in graph.node if producer.input[0] in n.output)
        if upstream.op_type not in FLOAT32_OPS:
            continue
        upstream.output[:] = [output.name if n == producer.input[0] else n for n in upstream.output]
        graph.node.remove(producer)
        output.type.tensor_type.elem_type = TensorProto.FLOAT


def check_float16(proto) -> None:
    """The float16 conversion's own gate: input and output float32, every floating-point weight
    float16 (a weight left in float32 is an error, not merely a bigger file)."""
    from onnx import TensorProto

    graph = proto.graph
    ends = [v for v in (*graph.input, *graph.output) if v.type.tensor_type.elem_type != TensorProto.FLOAT]
    if ends:
        raise ConversionError("float16", f"input and output must stay float32; {ends[0].name} is not")
    left = [i.name for i in graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE)]
    if left:
        raise ConversionError("float16", f"{len(left)} weight tensors were not converted to float16: "
                                         f"{', '.join(left[:3])}")
