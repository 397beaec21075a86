"""What an experiment is given to run: the sizes, and the seeded database."""

from __future__ import annotations

from dataclasses import dataclass

from fastpost.db import Database
from fastpost.lab.config import LabConfig
from fastpost.lab.environment import LabDatabase


@dataclass
class Lab:
    config: LabConfig
    database: LabDatabase | None = None

    @property
    def db(self) -> Database:
        return self.seeded.db

    @property
    def seeded(self) -> LabDatabase:
        if self.database is None:
            raise RuntimeError("this experiment needs the lab's database")
        return self.database

    @property
    def dialect(self) -> str:
        return self.seeded.dialect

    @property
    def repeat(self) -> int:
        return self.config.repeat
