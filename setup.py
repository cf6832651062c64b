"""Build hook for the optional C record scanner (lake/_recordscan.c); all metadata lives in pyproject.toml.

The scanner only makes imports faster. Without a C compiler the build prints a warning and Lake installs and
runs on its pure-Python path, with the same results."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any build failure means "no accelerator", never "no install"
            print(f"warning: lake._recordscan not built ({e}); imports use the pure-Python converter")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            print(f"warning: {ext.name} not built ({e}); imports use the pure-Python converter")


setup(
    ext_modules=[Extension("lake._recordscan", ["lake/_recordscan.c"], extra_compile_args=["-O2", "-std=c99"],
                           optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
