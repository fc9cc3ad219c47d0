"""The lecture MCU: layouts, the active-speaker choice, the video input buffer, and (ext/compositor.pxi,
ext/mixer.pxi) the kernels that composite the inputs' pictures and mix their audio. The pipeline that
joins them (decode, composite, encode, output to a Python-fed producer) comes next."""
