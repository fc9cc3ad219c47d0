"""Recordings: per-track files remuxed from the tapped RTP (writer.py), the recording thread and takes (recorder.py)."""
