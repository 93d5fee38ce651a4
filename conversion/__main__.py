"""``python -m onnx_mobilenets.conversion NAME --output DIR``: convert one catalogue variant into DIR.

The runtime runs it, in a subprocess that keeps TensorFlow out of the caller's process, when a model
is asked for by name and is nowhere to be found (`onnx_mobilenets.runtime.artifacts`). It prints the
artifact's path on stdout, and what went wrong on stderr (exit status 1).
"""

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnx_mobilenets.conversion", description=__doc__)
    parser.add_argument("name", help="catalogue name or alias")
    parser.add_argument("--output", required=True, help="the folder to write NAME.onnx and manifest.json into")
    parser.add_argument("--image-input", action="store_true", help="the preprocessing inside the model")
    parser.add_argument("--preprocessing", default="default", choices=("default", "slim"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter is not for users
    from onnx_mobilenets.errors import OnnxMobileNetsError

    from .native_logs import native_logs_filtered

    with native_logs_filtered():  # the lines TF_CPP_MIN_LOG_LEVEL cannot silence
        from .convert import convert_variant

        try:
            report = convert_variant(args.name, args.output, image_input=args.image_input,
                                     preprocessing=args.preprocessing)
        except (ValueError, FileNotFoundError, OnnxMobileNetsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(report.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
