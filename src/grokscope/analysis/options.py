"""An analysis's options, declared once as a pydantic model, from which the command line makes its flags.

An analysis that takes settings (the fingerprint's probe, the LLC sampler, DMD) declares them as a subclass of
:class:`AnalysisOptions`; each field that the command line offers carries a :class:`Flag` in its annotation
(``probe_size: Annotated[int, Flag("Fingerprint probe size.", metavar="N")] = Field(100, ge=1)``). The model's
bounds and choices are the validation, the field's name is the keyword of ``compute`` (or ``analyze_dynamics``), and
the flag's name is ``FLAG_PREFIX`` + the field's name with dashes unless the :class:`Flag` names it. So adding an
option to an analysis touches its own module only: ``grokscope analyze`` builds its flags from :func:`option_groups`.

A value given on the command line is validated by :func:`validate`, which turns pydantic's complaint into one line
naming the flag; :meth:`AnalysisOptions.keywords` says which keywords reach the analysis (and are recorded with its
cached rows); :meth:`AnalysisOptions.check_run` refuses settings that a particular run cannot honour.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from grokscope.errors import UserError

if TYPE_CHECKING:
    from grokscope.store import Run


@dataclass(frozen=True)
class Flag:
    """How a field of an :class:`AnalysisOptions` model appears on the command line.

    ``help``: the flag's help text (the group's ``HELP_PREFIX`` goes before it). ``flag``: its name, when it is not
    ``FLAG_PREFIX`` + the field's name. ``default``: what ``[default: ...]`` shows (the default the analysis uses,
    which may depend on other settings). ``metavar``: the value's placeholder. ``words``: values given as words
    (``{"full": None}``: ``--llc-batch-size full`` is a batch size of None); such a flag takes text.
    """

    help: str
    flag: str | None = None
    default: str | None = None
    metavar: str | None = None
    words: tuple[tuple[str, Any], ...] = ()


class AnalysisOptions(BaseModel):
    """Base of an analysis's options. Subclasses set ``FLAG_PREFIX`` (``"--llc-"``; ``"--"`` for flags named by
    their fields alone) and optionally ``HELP_PREFIX``; fields with a :class:`Flag` become command-line flags."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    FLAG_PREFIX: ClassVar[str] = "--"
    HELP_PREFIX: ClassVar[str] = ""

    @classmethod
    def flags(cls) -> dict[str, Flag]:
        """The fields offered as flags, by field name, in declaration order."""
        out = {}
        for name, info in cls.model_fields.items():
            flag = next((m for m in info.metadata if isinstance(m, Flag)), None)
            if flag is not None:
                out[name] = flag
        return out

    @classmethod
    def flag(cls, field: str) -> str:
        """The command-line spelling of ``field`` (``n_delays`` -> ``--dmd-delays``)."""
        flag = cls.flags().get(field)
        if flag is not None and flag.flag:
            return flag.flag
        return cls.FLAG_PREFIX + field.replace("_", "-")

    @classmethod
    def flag_type(cls, field: str) -> type:
        """The type the command line parses a flag's value as: the field's own (int, float), text for choices and
        for fields that take words."""
        flag = cls.flags()[field]
        if flag.words:
            return str
        annotation = cls.model_fields[field].annotation
        options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
        base = options[0] if len(options) == 1 else str
        return base if base in (int, float, str) else str

    def keywords(self) -> dict[str, Any]:
        """The keywords the analysis receives: the fields that were given (unset ones keep the analysis's defaults).
        What the runner records with each cached row, so a subclass that can say more precisely which settings
        change a result (e.g. only those that differ from the defaults) overrides this."""
        return {name: getattr(self, name) for name in type(self).model_fields if name in self.model_fields_set}

    def check_run(self, run: Run) -> None:
        """Refuse, in one line naming the flag, settings that this run cannot honour (default: none)."""


def _words(cls: type[AnalysisOptions], field: str, value: Any) -> Any:
    flag = cls.flags().get(field)
    if flag is None or not flag.words or not isinstance(value, str):
        return value
    words = dict(flag.words)
    if value.strip() in words:
        return words[value.strip()]
    return value


def validate(cls: type[AnalysisOptions], given: dict[str, Any]) -> AnalysisOptions:
    """``given`` (field -> value, only the flags that were given) as a checked ``cls``; a bad value is one line
    naming the flag and the value as given (``--dmd-method exact: expected one of rrr, projected``)."""
    values = {field: _words(cls, field, value) for field, value in given.items()}
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else next(iter(given))
        words = cls.flags()[field].words if field in cls.flags() else ()
        if first["type"] == "literal_error":
            message = "expected one of " + ", ".join(str(c) for c in _literal_choices(cls, field))
        elif words and first["type"] in ("int_parsing", "float_parsing", "int_type", "float_type"):
            message = "expected a number or " + " or ".join(word for word, _ in words)
        else:
            message = first["msg"]
        raise UserError(f"{cls.flag(field)} {given.get(field)}: {message}") from None


def _literal_choices(cls: type[AnalysisOptions], field: str) -> list[Any]:
    annotation = cls.model_fields[field].annotation
    found: list[Any] = []
    stack = [annotation]
    while stack:
        current = stack.pop(0)
        if typing.get_origin(current) is typing.Literal:
            found += list(typing.get_args(current))
        else:
            stack += list(typing.get_args(current))
    return found


@dataclass(frozen=True)
class OptionGroup:
    """One options model and the analyses that read it (``probe`` settings: the fingerprint and DMD)."""

    options: type[AnalysisOptions]
    analyses: tuple[str, ...]


def option_groups() -> list[OptionGroup]:
    """Every options model an analysis declares (its spec's ``options``, and DMD's, which runs on recordings rather
    than checkpoints), with the analyses that read each, in the registry's order."""
    from grokscope.analysis import dynamics
    from grokscope.analysis.runner import registry

    readers: dict[type[AnalysisOptions], list[str]] = {}
    declared = [(name, spec.options) for name, spec in registry().items()] + [(dynamics.NAME, dynamics.OPTIONS)]
    for name, models in declared:
        for model in models:
            readers.setdefault(model, []).append(name)
    return [OptionGroup(model, tuple(names)) for model, names in readers.items()]
