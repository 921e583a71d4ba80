"""tuneavideo: Tune-A-Video on current diffusers."""
