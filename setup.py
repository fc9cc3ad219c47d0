"""Build the native packet core.

Every top-level ``ext/<name>.pyx`` becomes ``enx_media._native.<name>``. Per-topic code lives in
``ext/*.pxi`` files that a module ``include``s, and shared C declarations in ``ext/includes/*.pxd``:
a ``.pxd`` beside its ``.pyx`` in ``ext/`` is silently ignored when the module is built under another
package name (see STYLE.md), so we never rely on that.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _fail(msg):
    sys.stderr.write("\n*** enx-media build: " + msg + "\n\n")
    raise SystemExit(1)


def _check_toolchain():
    """Stop early with a message that names the package to install, not a wall of compiler errors."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc) and not shutil.which("cc"):
        _fail("no C compiler found (%s). Install one: apt-get install build-essential" % cc)
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        _fail("Python headers missing (%s/Python.h). Install them: apt-get install python3-dev" % include)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        for header, call, lib, package, why in (
                ("openssl/evp.h", "EVP_CIPHER_CTX_free(EVP_CIPHER_CTX_new());", "-lcrypto", "libssl-dev", "SRTP"),
                ("zlib.h", "crc32(0, 0, 0);", "-lz", "zlib1g-dev", "STUN FINGERPRINT")):
            with open(src, "w") as f:
                f.write("#include <%s>\nint main(void){%sreturn 0;}\n" % (header, call))
            r = subprocess.run([shutil.which(cc) or "cc", src, "-o", os.path.join(tmp, "probe"), lib],
                               capture_output=True, text=True)
            if r.returncode != 0:
                _fail("%s headers/library not found (needed for %s). Install them: apt-get install %s\n"
                      % (header, why, package) + r.stderr[-800:])


def _extensions():
    sources = sorted(glob.glob(os.path.join("ext", "*.pyx")))
    if not sources:
        return []
    _check_toolchain()
    try:
        from Cython.Build import cythonize
    except ImportError:
        _fail("Cython is not installed. Install it: pip install 'Cython>=3.0'")
    exts = []
    for src in sources:
        name = os.path.splitext(os.path.basename(src))[0]
        exts.append(Extension(
            "enx_media._native." + name,
            sources=[src],
            include_dirs=["ext", "ext/includes"],
            libraries=["crypto", "z"],   # OpenSSL libcrypto; zlib for the STUN FINGERPRINT
            extra_compile_args=["-O3", "-fno-strict-aliasing"],
            define_macros=[("_GNU_SOURCE", "1")],
        ))
    return cythonize(
        exts,
        include_path=["ext", "ext/includes", "enx_media/_native"],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=_extensions())
