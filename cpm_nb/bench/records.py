"""TFRecord checksums and reading, MB/s: ``python -m cpm_nb.bench records``.

Times the CRC-32C that every TFRecord frame carries twice, through ``google-crc32c``
(:func:`cpm_nb.io.records.crc32c`) against the pure-Python loop it replaced
(:func:`cpm_nb.io.records.crc32c_python`, the fallback), and reading a file of
JPEG-sized records with every checksum verified: :func:`cpm_nb.io.records.read_records`
(the input path without TensorFlow) with each of the two, and ``tf.data`` where
TensorFlow is installed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from cpm_nb.bench import print_table, timeit
from cpm_nb.io import records

RECORD_BYTES = 20_000  # about one JPEG context crop
N_RECORDS = 500  # a 10 MB shard


def _write_file(path: Path, rng) -> int:
    with open(path, "wb") as f:
        for _ in range(N_RECORDS):
            f.write(records.frame(rng.bytes(RECORD_BYTES)))
    return path.stat().st_size


def _read_all(path: Path) -> None:
    for _ in records.read_records(path):
        pass


def _tf_reader(path: Path):
    from cpm_nb.core.runtime import import_tensorflow, tensorflow_available

    if not tensorflow_available():
        return None
    tf = import_tensorflow()
    return lambda: sum(1 for _ in tf.data.TFRecordDataset(str(path)))


def bench_records(args) -> dict:
    quick = getattr(args, "quick", False)
    rng = np.random.default_rng(0)
    block = rng.bytes(1 << 20)  # 1 MB
    min_time = 0.2 if quick else 1.0
    native = timeit(lambda: records.crc32c(block), items=1, min_time=min_time)
    python = timeit(lambda: records.crc32c_python(block), items=1, repeat=2 if quick else 3,
                    min_time=min_time)
    result = {"crc32c_implementation": records.CRC32C_IMPLEMENTATION,
              "crc_mb_per_s": {"google-crc32c": native["per_s"], "python": python["per_s"]}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.tfrecord"
        mb = _write_file(path, rng) / 1e6
        read = {"records.read_records": timeit(lambda: _read_all(path), items=mb,
                                               min_time=min_time)["per_s"]}
        saved = records._NATIVE
        records._NATIVE = None  # the fallback, as on a machine without google-crc32c
        try:
            read["records.read_records, Python CRC"] = timeit(
                lambda: _read_all(path), items=mb, warmup=0, repeat=1, min_time=0)["per_s"]
        finally:
            records._NATIVE = saved
        tf_read = _tf_reader(path)
        if tf_read is not None:
            read["tf.data.TFRecordDataset"] = timeit(tf_read, items=mb, min_time=min_time)["per_s"]
    result["read_mb_per_s"] = read
    crc = result["crc_mb_per_s"]
    rows = [(f"CRC-32C, {name}", f"{rate:8.1f} MB/s") for name, rate in crc.items()]
    rows.append(("ratio", f"{crc['google-crc32c'] / crc['python']:8.0f}x"))
    rows += [(f"read + verify, {name}", f"{rate:8.1f} MB/s") for name, rate in read.items()]
    print_table(f"TFRecord checksums ({records.CRC32C_IMPLEMENTATION} in use; "
                f"{N_RECORDS} records of {RECORD_BYTES:,} B)", rows)
    return result
