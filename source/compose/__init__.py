"""The compositor: a declarative timeline (timeline.py) rendered in one ffmpeg pass (render.py), with
text/captions (captions.py) and the layouts built on it (narrated.py, storyboard.py)."""
