"""The handshake path in Python: ICE-lite, DTLS (passive), SDP. Media stays in the native core."""
