"""Run onnx2tf on one ONNX file, inside onnx2tf's own environment (TF 2.19): ONNX -> SavedModel.

Executed as a script by that environment's python; it imports only onnx and onnx2tf, never
edgeship. Usage: python onnx2tf_driver.py IN.onnx OUT_DIR
"""
import re
import sys


def prepare(src: str, dst: str) -> list:
    """A copy onnx2tf accepts: dynamic batch as a named dim, node names valid as TF scope names."""
    import onnx

    model = onnx.load(src)
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            dims[0].Clear()
            dims[0].dim_param = "N"  # onnx2tf rejects -1 dims but keeps a named batch dynamic
    for i, node in enumerate(model.graph.node):
        # e.g. Paddle exports: names with '@' fail as TF scope names mid-conversion
        node.name = re.sub(r"[^A-Za-z0-9_.>-]", "_", node.name) if node.name else f"{node.op_type}_{i}"
    onnx.save(model, dst)
    init = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in init]


def _offline(*_a, **_k):
    raise RuntimeError("onnx2tf asked to download its sample images; edgeship runs offline and does not let it")


def main(src: str, out: str) -> None:
    import onnx2tf
    import onnx2tf.onnx2tf as core
    import onnx2tf.utils.common_functions as common

    core.download_test_image_data = _offline
    common.download_test_image_data = _offline
    clean = out.rstrip("/") + ".input.onnx"
    inputs = prepare(src, clean)
    # Inputs keep the ONNX layout (NCHW stays NCHW), so the same data and preprocessing feed every artifact.
    onnx2tf.convert(
        input_onnx_file_path=clean,
        output_folder_path=out,
        keep_shape_absolutely_input_names=inputs,
        non_verbose=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
