"""Peer servers for the benchmark, each serving the same ONNX file with our pre/post code.

Each reads BENCH_MODEL_PATH, BENCH_PORT, BENCH_INTRA_OP_THREADS and BENCH_MAX_BATCH_SIZE,
takes one JPEG as multipart field `file` on POST /detect, and uses its own batching.
"""
