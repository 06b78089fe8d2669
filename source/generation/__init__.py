"""The generation bridge: one warm diffusers engine behind generate_single_video()."""
