"""Build MediaPipe's `pose_landmarker_full.task` bundle from the pose models inside the mediapipe 0.10.21 wheel.

Run as a script in a child process (source.model_files does this):
    python pose_bundle_build.py WHEEL_DIR OUT_FILE
WHEEL_DIR holds the unpacked `mediapipe/` folder of the 0.10.21 wheel. The Tasks API refuses a float model
without NormalizationOptions metadata, so each .tflite gets metadata written with 0.10.21's own metadata
writer (newer releases' writer lacks its native helpers), then both go into a stored (uncompressed) zip.

Why a child process and stub packages: the wheel's `mediapipe/__init__.py` imports the whole framework
(OpenCV, matplotlib, numpy<2, ...), but the metadata writer needs only `flatbuffers` and two small native
modules that link nothing beyond libc/libstdc++. Registering `mediapipe`, `mediapipe.tasks` and
`mediapipe.tasks.python` as bare namespace modules skips those imports, so the writer runs in this project's
own interpreter; a child process keeps the old `mediapipe` names away from the worker's mediapipe 1.x.
This file imports nothing from the project on purpose.
"""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

# (name inside the bundle, file inside the wheel, normalisation mean, std, output tensor count)
MODELS = (
    ("pose_detector.tflite", "mediapipe/modules/pose_detection/pose_detection.tflite", 127.5, 127.5, 2),
    ("pose_landmarks_detector.tflite", "mediapipe/modules/pose_landmark/pose_landmark_full.tflite", 0.0, 255.0, 5),
)
# Fixed member dates and modes make the bundle byte-for-byte reproducible (the same bytes as the copy
# in ../shared/models/pose/), so its SHA-256 can be checked.
ZIP_DATE = (2026, 11, 22, 2, 37, 42)


def _load_writer(wheel_dir: Path):
    for name in ("mediapipe", "mediapipe.tasks", "mediapipe.tasks.python"):
        module = types.ModuleType(name)
        module.__path__ = [str(wheel_dir.joinpath(*name.split(".")))]
        sys.modules[name] = module
    sys.path.insert(0, str(wheel_dir))
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    return metadata_writer


def build(wheel_dir: Path, out_file: Path) -> None:
    metadata_writer = _load_writer(wheel_dir)
    with zipfile.ZipFile(out_file, "w", compression=zipfile.ZIP_STORED) as bundle:
        for member, source, mean, std, outputs in MODELS:
            writer = metadata_writer.MetadataWriter.create(bytearray((wheel_dir / source).read_bytes()))
            stem = member.removesuffix(".tflite")
            writer.add_general_info(stem, stem)
            writer.add_image_input(norm_mean=[mean], norm_std=[std])
            for _ in range(outputs):
                writer.add_feature_output()
            model, _json = writer.populate()
            info = zipfile.ZipInfo(member, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o600 << 16
            bundle.writestr(info, bytes(model))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: pose_bundle_build.py WHEEL_DIR OUT_FILE")
    build(Path(sys.argv[1]), Path(sys.argv[2]))
