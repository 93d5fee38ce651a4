"""The preprocessings of `onnx_mobilenets.preprocessing` as ONNX operations, for image-in artifacts.

`preprocessing_model` makes a model from decoded images (uint8 ``[batch, height, width, 3]``, RGB, any
size; the images of one batch share it) to the network's input, with only portable ops: Shape, Slice,
integer arithmetic, Cast, Resize (linear, no antialias), Reshape, ReduceMean, and for uint8 networks
Round and Clip. The Resize runs on NHWC data, as the runtime's NumPy twin assumes (onnxruntime's
NHWC and NCHW kernels agree bit for bit, and the twin reproduces them; the tests hold it to that).
`with_preprocessing` puts it in front of a network: an image-in artifact.
"""

from __future__ import annotations

import numpy as np

from onnx_mobilenets import preprocessing
from onnx_mobilenets.preprocessing import Preprocessing

from .graph import INPUT_NAME

IMAGE_INPUT = "image"  # the input of image-in artifacts: decoded images
PREPROCESSING_SCOPE = "preprocessing/"  # the names of an image-in artifact's preprocessing nodes

# Every op the preprocessings use (the graph gate of image-in artifacts allows them).
PREPROCESSING_OPS = ("Shape", "Slice", "ReduceMin", "Div", "Mul", "Sub", "Concat", "Add", "Cast", "Less", "Not",
                     "ReduceSum", "Gather", "Unsqueeze", "Resize", "Reshape", "ReduceMean", "Round", "Clip",
                     "Transpose")
PIXELS = "pixels"  # the 0..255 float32 pixels, before the network input's own scaling or rounding


def preprocessing_model(resolution: int, name: str, opset: int, contract: Preprocessing = None,
                        output: str = PIXELS, batch_size=None):
    """An ONNX model computing preprocessing `name` at `resolution`. Without `contract` its output is
    the float32 pixels (0..255, NHWC); with one, what a network with that input contract takes
    (scaled float32 or rounded uint8, in its layout). `batch_size`: a fixed one, else any."""
    from onnx import TensorProto, checker, helper

    preprocessing.check_name(name)
    graph = _Graph(opset)
    shape = graph.op("Shape", IMAGE_INPUT)
    batch = graph.op("Slice", shape, graph.ints("first", [0]), graph.ints("one", [1]))
    height_width = graph.op("Slice", shape, graph.ints("one", [1]), graph.ints("three", [3]))
    if name == preprocessing.DEFAULT:
        crop, side = _square_crop(graph, height_width)
        pixels = _resize_and_average_blocks(graph, crop, side, batch, resolution)
    else:
        crop = _crop_each_axis(graph, height_width)
        sizes = graph.op("Concat", batch, graph.ints("square", [resolution, resolution]), graph.ints("channels", [3]),
                         axis=0)
        pixels = graph.op("Resize", crop, "", "", sizes, mode="linear", coordinate_transformation_mode="asymmetric")
    result, elem_type, dims = _network_input(graph, pixels, contract, resolution)
    graph.rename(result, output)
    image = helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, [batch_size or "batch", "height", "width", 3])
    model = helper.make_model(
        helper.make_graph(graph.nodes, f"preprocessing_{name}", [image],
                          [helper.make_tensor_value_info(output, elem_type, dims)], graph.initializers),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-mobilenets")
    checker.check_model(model, full_check=True)
    return model


def _square_crop(graph, height_width: str) -> tuple:
    """The default's crop, as float32, and its side: m = min(H, W), side = m - 2 (m // 16), centred."""
    from onnx import TensorProto

    side = graph.reduce("ReduceMin", height_width, keepdims=1)  # [m]
    side = graph.op("Sub", side, graph.op("Mul", graph.op("Div", side, graph.ints("sixteen", [16])),
                                           graph.ints("two", [2])))
    sides = graph.op("Concat", side, side, axis=0)
    start = graph.op("Div", graph.op("Sub", height_width, sides), graph.ints("two", [2]))
    crop = graph.op("Slice", IMAGE_INPUT, start, graph.op("Add", start, sides), graph.ints("height_width_axes", [1, 2]))
    return graph.op("Cast", crop, to=TensorProto.FLOAT), side


def _crop_each_axis(graph, height_width: str) -> str:
    """TF-slim's crop, as float32: each axis on its own, start = size // 16 = int((size - 0.875 size) / 2)."""
    from onnx import TensorProto

    start = graph.op("Div", height_width, graph.ints("sixteen", [16]))
    sides = graph.op("Sub", height_width, graph.op("Mul", start, graph.ints("two", [2])))
    crop = graph.op("Slice", IMAGE_INPUT, start, graph.op("Add", start, sides), graph.ints("height_width_axes", [1, 2]))
    return graph.op("Cast", crop, to=TensorProto.FLOAT)


def _resize_and_average_blocks(graph, crop: str, side: str, batch: str, resolution: int) -> str:
    """The default's resize: bilinear (half_pixel) to R f, then the mean of each f x f block, where f is
    the largest power of two up to 64 with R f <= side (a count of comparisons)."""
    from onnx import TensorProto

    powers = [2 ** k for k in range(1, preprocessing.MAX_BLOCK.bit_length())]
    # Not(Less) rather than GreaterOrEqual: onnxruntime's shape inference (data propagation) of
    # GreaterOrEqual at opsets 13-15 makes the Resize sizes below look empty and refuses the model.
    too_small = graph.op("Less", side, graph.ints("block_sides", [resolution * p for p in powers]))
    fits = graph.op("Cast", graph.op("Not", too_small), to=TensorProto.INT64)
    count = graph.reduce("ReduceSum", fits, keepdims=0)  # a scalar: onnxruntime's shape inference again
    f = graph.op("Unsqueeze", graph.op("Gather", graph.ints("blocks", [1] + powers), count), graph.ints("first", [0]))
    side_out = graph.ints("resolution", [resolution])
    big_side = graph.op("Mul", f, side_out)
    three = graph.ints("channels", [3])
    sizes = graph.op("Concat", batch, big_side, big_side, three, axis=0)
    big = graph.op("Resize", crop, "", "", sizes, mode="linear", coordinate_transformation_mode="half_pixel")
    blocks = graph.op("Concat", batch, side_out, f, side_out, f, three, axis=0)
    return graph.reduce("ReduceMean", graph.op("Reshape", big, blocks), axes=[2, 4], keepdims=0)


def _network_input(graph, pixels: str, contract, resolution: int) -> tuple:
    """The tail after the pixels: (output name, element type, dims)."""
    from onnx import TensorProto

    if contract is None:
        return pixels, TensorProto.FLOAT, ["batch", resolution, resolution, 3]
    if contract.dtype == "uint8":
        rounded = graph.op("Round", pixels)
        clipped = graph.op("Clip", rounded, graph.floats("zero", 0.0), graph.floats("full", 255.0))
        result, elem_type = graph.op("Cast", clipped, to=TensorProto.UINT8), TensorProto.UINT8
    else:
        scaled = graph.op("Mul", pixels, graph.floats("scale", contract.scale))
        result, elem_type = graph.op("Add", scaled, graph.floats("offset", contract.offset)), TensorProto.FLOAT
    if contract.layout == "NCHW":
        return graph.op("Transpose", result, perm=[0, 3, 1, 2]), elem_type, ["batch", 3, resolution, resolution]
    return result, elem_type, ["batch", resolution, resolution, 3]


class _Graph:
    """A list of nodes and constants under construction; names are made unique here."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes, self.initializers, self._constants = [], [], {}

    def op(self, op_type: str, *inputs, **attributes) -> str:
        from onnx import helper

        output = f"{PREPROCESSING_SCOPE}{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def reduce(self, op_type: str, data: str, axes=None, keepdims: int = 1) -> str:
        """ReduceMin/Sum/Mean over `axes` (all when None): axes became an input at opset 18 (13 for ReduceSum)."""
        if axes is None:
            return self.op(op_type, data, keepdims=keepdims)
        if self.opset >= 18 or op_type == "ReduceSum":
            return self.op(op_type, data, self.ints(f"axes_{'_'.join(map(str, axes))}", axes), keepdims=keepdims)
        return self.op(op_type, data, axes=axes, keepdims=keepdims)

    def ints(self, name: str, values) -> str:
        return self._constant(name, np.asarray(values, np.int64))

    def floats(self, name: str, value: float) -> str:
        return self._constant(name, np.asarray(value, np.float32))

    def _constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        full = f"{PREPROCESSING_SCOPE}{name}"
        if full not in self._constants:
            self._constants[full] = value
            self.initializers.append(numpy_helper.from_array(value, full))
        elif not np.array_equal(self._constants[full], value):
            raise ValueError(f"constant {full} defined twice with different values")
        return full

    def rename(self, old: str, new: str) -> None:
        for node in self.nodes:
            node.output[:] = [new if n == old else n for n in node.output]


def with_preprocessing(network, resolution: int, contract: Preprocessing, opset: int, batch_size=None):
    """An image-in model: `network` (its input ``images``, as `contract` describes it) preceded by
    the preprocessing `contract` names, so its input is the decoded image (``image``, uint8
    ``[batch, height, width, 3]``; `batch_size` a fixed one, else any). `network` is changed in place
    and returned."""
    from onnx import helper

    front = preprocessing_model(resolution, contract.name, opset, contract, output=INPUT_NAME, batch_size=batch_size)
    graph = network.graph
    (old_input,) = graph.input
    if old_input.name != INPUT_NAME:
        raise ValueError(f"the network's input is {old_input.name!r}, not {INPUT_NAME!r}")
    nodes = list(front.graph.node) + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(front.graph.initializer)
    del graph.input[:]
    graph.input.extend(front.graph.input)
    if not any(o.domain in ("", "ai.onnx") and o.version == opset for o in network.opset_import):
        network.opset_import.extend([helper.make_opsetid("", opset)])
    return network
