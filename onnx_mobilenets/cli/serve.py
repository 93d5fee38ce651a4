"""`onnx-mobilenets serve`: classification over HTTP on Ray Serve, with dynamic batching, on a local
Ray or the cluster at ``--address`` (`onnx_mobilenets.serving`; the ``[serve]`` extra)."""

from __future__ import annotations

from .predict import providers_of


def run(args) -> int:
    try:
        from onnx_mobilenets import serving
    except ImportError as e:
        raise SystemExit(f"error: {e}") from None
    options = serving.ServeOptions(replicas=args.replicas, max_batch_size=args.max_batch_size,
                                   batch_wait_ms=args.batch_wait_ms, max_body_bytes=int(args.max_body_mb * 2**20),
                                   providers=providers_of(args.providers), threads=args.threads)
    serving.serve_forever(args.model, host=args.host, port=args.port, address=args.address, options=options,
                          on_ready=lambda line: print(line, flush=True))
    return 0
