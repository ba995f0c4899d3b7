"""What every command shares: flags derived from the config fields, the one path from arguments to a
config, the one translation of field names to flags, error printing and progress bars."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Collection, Mapping
from typing import Any, Callable

from instyle.engine.config import ConfigError, check_config

def number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: ``kind`` within [low, high] (``low`` excluded with ``low_open``), so a bad
    value is a usage error naming the flag before any work starts."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        bad_low = low is not None and (value <= low if low_open else value < low)
        if value != value or bad_low or (high is not None and value > high):  # value != value: NaN
            bounds = f"{'>' if low_open else '>='} {low:g}" if high is None else f"in [{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# ---------------------------------------------------------------------------- flags from config fields


def flag_for(field: str) -> str:
    """The flag of a config field: ``batch_size`` -> ``--batch-size``; a nested field goes by its own
    name (``loss.style_weight`` -> ``--style-weight``)."""
    return "--" + field.rsplit(".", 1)[-1].replace("_", "-")


def flag_fields(config_cls) -> list[tuple[dataclasses.Field, Any]]:
    """``(field, default)`` of each field offered as a flag, nested configs (the loss) flattened with
    the task's own defaults."""
    found = []
    for f in dataclasses.fields(config_cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            found += [(g, getattr(default, g.name)) for g in dataclasses.fields(default) if g.metadata.get("flag", True)]
        elif f.metadata.get("flag", True):
            found.append((f, default))
    return found


def _kind(f: dataclasses.Field) -> type:
    text = str(f.type)
    return int if "int" in text and "float" not in text else float if "float" in text else str


GIVEN = "_flags_given"  # the Namespace attribute: dests of the config flags on the command line


def _recording(action_cls: type) -> type:
    """``action_cls`` that also notes its dest in the Namespace's :data:`GIVEN` set when the flag is given."""

    class Recording(action_cls):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            namespace.__dict__.setdefault(GIVEN, set()).add(self.dest)

    return Recording


_STORE, _STORE_TRUE, _BOOLEAN = (_recording(c) for c in (argparse._StoreAction, argparse._StoreTrueAction, argparse.BooleanOptionalAction))


def add_config_flags(parser: argparse.ArgumentParser, config_cls, skip: set[str] = frozenset()) -> None:
    """One flag per field of ``config_cls`` (see :func:`flag_fields`), its help, choices and default
    from the field; :func:`config_from_args` knows which flags were given."""
    for f, default in flag_fields(config_cls):
        if f.name in skip:
            continue
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f.metadata.get("help", "")
        if "(default:" not in help_text:  # a help text may say what a default of None means
            help_text = f"{help_text} (default: {shown})".strip()
        options: dict[str, Any] = dict(default=default, help=help_text, dest=f.name)
        if isinstance(default, bool):  # --flag, or --flag / --no-flag where it is on by default
            options["action"] = _BOOLEAN if default else _STORE_TRUE
        elif isinstance(default, tuple):
            options.update(action=_STORE, nargs="+", metavar=f.metadata.get("metavar") or "VALUE")
        else:
            options.update(action=_STORE, type=_kind(f), choices=f.metadata.get("choices"), metavar=f.metadata.get("metavar"))
        parser.add_argument(flag_for(f.name), **options)


def config_from_args(config_cls, args: argparse.Namespace, check: Callable = check_config, **fixed):
    """The one path from parsed arguments to a config: the flags' values, ``fixed`` values the command
    sets itself, then ``check`` (ConfigError names the field). A style weight given on the command
    line is never rescaled, and a loss network given is used whatever network stored style targets
    were computed on (where the config has those settings)."""
    values = {f.name: getattr(args, f.name) for f, _ in flag_fields(config_cls) if hasattr(args, f.name)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    given, settings = getattr(args, GIVEN, set()), _setting_names(config_cls)
    for flag, setting in (("style_weight", "rescale_style_weight"), ("vgg_weights", "follow_style_targets")):
        if flag in given and setting in settings:
            values[setting] = False
    config = config_cls(**{**values, **fixed})
    check(config)
    return config


def _setting_names(config_cls) -> set[str]:
    """Every field of ``config_cls``, those of its nested configs (the loss) included, flags or not."""
    names = set()
    for f in dataclasses.fields(config_cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        names |= _setting_names(type(default)) if dataclasses.is_dataclass(default) else {f.name}
    return names


# ---------------------------------------------------------------------------- errors


# a snake_case word that is not part of a path or a file name: a field name, where it is one
_FIELD_WORD = re.compile(r"(?<![\w/.-])[a-z]+(?:_[a-z0-9]+)+(?![\w/.-])")


def _flags_of(config_cls, names: Collection[str] | Mapping[str, str]) -> dict[str, str]:
    """Field name -> flag: each flag field of ``config_cls``, then ``names``."""
    flags = {f.name: flag_for(f.name) for f, _ in flag_fields(config_cls)} if config_cls is not None else {}
    flags.update(names.items() if isinstance(names, Mapping) else ((name, flag_for(name)) for name in names))
    return flags


def error_text(error: BaseException, names: Collection[str] | Mapping[str, str] = frozenset(), config=None) -> str:
    """A library error in the command line's words, the one place field names become flags: those of
    ``config`` (the config class of the command) and ``names`` (the command's own arguments; a mapping
    gives a flag not named after its field, ``{"eval_dir": "--eval"}``).
    ``ConfigError('loss.style_weight', ...)`` -> ``--style-weight ...``; ``device 'tpu': ...`` ->
    ``--device tpu: ...``; a message that starts with one of ``names`` (``size must ...``) -> ``--size
    must ...``; and every field name the message gives as advice (``pass style_layers ...``) becomes
    its flag. A model file's message is left as it is: the settings it names are the file's."""
    from instyle.engine.modelfile import ModelFileError

    flags = _flags_of(config, names)

    def as_flags(text: str) -> str:
        return _FIELD_WORD.sub(lambda m: flags.get(m.group(0), m.group(0)), text)

    if isinstance(error, ConfigError):
        return f"{flags.get(error.field) or flag_for(error.field)} {as_flags(error.reason)}"
    text = str(error)
    if isinstance(error, ModelFileError):
        return text
    value = re.match(r"(device|dtype) '([^']*)': (.*)", text, re.S)
    if value:
        return f"{flag_for(value.group(1))} {value.group(2)}: {value.group(3)}"
    first = text.split(" ", 1)[0].rstrip(":")
    if first in names:
        text = flags[first] + text[len(first):]
    return as_flags(text)


def fail(
    command: str, error: BaseException | str, code: int, names: Collection[str] | Mapping[str, str] = frozenset(),
    config=None,
) -> int:
    """Print ``instyle COMMAND: error: ...`` on stderr (an error in the words of :func:`error_text`)
    and return ``code``."""
    text = error if isinstance(error, str) else error_text(error, names, config)
    print(f"instyle {command}: error: {text}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------- progress and shared flags


def progress(tqdm, **kwargs):
    """A live bar on a terminal; in a log file, one line every 30 seconds."""
    interactive = sys.stderr.isatty()
    return tqdm(dynamic_ncols=True, mininterval=0.1 if interactive else 30, ascii=not interactive, **kwargs)


class LazyBar:
    """A progress bar that appears with the first step, so that an error before it prints alone."""

    def __init__(self, make) -> None:
        object.__setattr__(self, "_make", make)
        object.__setattr__(self, "_bar", None)

    def _get(self):
        if self._bar is None:
            object.__setattr__(self, "_bar", self._make())
        return self._bar

    def __getattr__(self, name):
        return getattr(self._get(), name)

    def __setattr__(self, name, value) -> None:
        setattr(self._get(), name, value)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_training(command: str, args: argparse.Namespace, config_cls, check: Callable, train: Callable, names=()) -> int:
    """A training command (``instyle train``, ``instyle train-adain``): the config from the flags, the
    run (``train(config, on_step=...)``) behind a progress bar, its errors in the command line's words
    (``names``: the command's own arguments, see :func:`error_text`), and what it wrote."""
    from instyle.engine.training import ModelNotSaved, TrainingError, TrainingInterrupted
    from instyle.engine.weights import WeightsError

    try:
        config = config_from_args(config_cls, args, check=check)
        result = _with_progress(train, config)
    except TrainingInterrupted as stop:
        print(f"instyle {command}: {stop}; resume with --resume", file=sys.stderr)
        return 128 + stop.signum
    except ModelNotSaved as unsaved:
        rescue = f"--resume --log-dir {unsaved.log_dir} -o OTHER.safetensors"
        return fail(command, f"{unsaved.reason}; the finished run is kept in {unsaved.checkpoint}: "
                    f"run the same command with {rescue} to save its model", 1)  # fmt: skip
    except (TrainingError, WeightsError, OSError, ValueError) as error:
        return fail(command, error, 1, names, config=config_cls)
    if os.environ.get("RANK", "0") != "0":  # under torchrun the first process speaks for all
        return 0
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items() if k != "images_per_s")
    if result.stopped_early:
        print(f"stopped early at step {result.step}: the held-out loss last improved at step {result.best_step}")
    elif result.best_step != result.step:
        print(f"the held-out loss was lowest at step {result.best_step}")
    weights = f" with the weights of step {result.best_step}" if result.best_step != result.step else ""
    print(f"wrote {result.output}{weights} after {result.step} steps in {result.seconds:.0f} s ({losses}); log in {result.log_dir}")
    return 0


def _with_progress(train: Callable, config):
    """``train(config)`` with a progress bar of its steps (closed before any error is printed)."""
    from tqdm import tqdm

    bar = LazyBar(lambda: progress(tqdm, total=config.iterations, unit="step"))

    def on_step(step: int, losses: dict[str, float]) -> None:
        bar.n = step
        terms = {k: f"{v:.3g}" for k, v in losses.items() if k != "images_per_s"}  # each run's own terms
        bar.set_postfix(**terms, img_s=f"{losses['images_per_s']:.1f}", refresh=False)
        bar.update(0)

    try:
        return train(config, on_step=on_step)
    finally:
        bar.close()


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels", type=number(int, 1), default=None,
        help="refuse images with more pixels, checked before decoding (default: $INSTYLE_MAX_PIXELS or 50000000)",
    )  # fmt: skip


def add_device(parser: argparse.ArgumentParser) -> None:
    from instyle.engine.device import DEVICES_HELP

    parser.add_argument("--device", default="auto", help=f"{DEVICES_HELP} (default: auto)")


def is_image_name(path) -> bool:
    return path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
