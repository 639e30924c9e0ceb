"""A sweep's settings (`STORAGE/NAME/smsweep.json`): the typed contract between the driver that
runs or resumes a sweep, its trials and the report.

`run` writes them once; `resume` needs nothing else; every trial gets them; the report reads
them. One model, validated once where it is read (the spec with it, plugins imported first),
instead of a dictionary that each reader re-parses with its own defaults.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from smsweep.engines.store import Location
from smsweep.errors import SpecError
from smsweep.spec.config import SweepSpec

SETTINGS_FILE = "smsweep.json"


class SweepSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: SweepSpec  # the spec as the sweep runs it (search space included)
    name: str  # the sweep's name: its directory, its Optuna study
    experiment_dir: str  # STORAGE/NAME: a directory or an object-store URL
    mlflow_uri: str  # absolute: a resume may run from another directory
    experiment: str  # the MLflow experiment
    optuna_storage: str | None = None  # where the study lives (None: no search, object store)

    @property
    def directory(self) -> Location:
        return Location.of(self.experiment_dir)

    @property
    def study(self) -> tuple[str, str] | None:
        """(storage URL, study name) of the sweep's Optuna study, if it has one."""
        return (self.optuna_storage, self.name) if self.optuna_storage else None

    def write(self) -> None:
        (self.directory / SETTINGS_FILE).write_text(self.model_dump_json(indent=1))

    @classmethod
    def read(cls, directory: str | Location) -> SweepSettings:
        """The settings in `directory`; SpecError naming the file when they cannot be read."""
        where = Location.of(directory) / SETTINGS_FILE
        try:
            return cls.model_validate_json(where.read_text())
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, item['loc'])) or 'the file'}: {item['msg'].lower()}"
                for item in error.errors()[:5]
            )
            raise SpecError(
                f"{where} is not a sweep's settings ({problems}); it was written by another "
                "version of smsweep or edited: run the sweep again, or restore the file"
            ) from None
