"""Frame and video helpers (PyAV, OpenCV, NumPy): reading, writing, stitching, colour, RIFE."""
