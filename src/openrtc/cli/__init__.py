"""The `openrtc` command line interface."""
