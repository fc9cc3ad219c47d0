"""The lecture MCU: layouts, and (ext/compositor.pxi, ext/mixer.pxi) the kernels that composite the inputs'
pictures and mix their audio. The pipeline that feeds them (jitter buffer, decode, encode) comes next."""
