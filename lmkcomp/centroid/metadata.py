"""Landmark and image metadata for Algorithm 2's geo scope and same-city rule.

- `landmark_metadata.csv`: `landmark_id, city, latitude, longitude` (the synthetic generator
  also writes `name`, `region`, `family`). A landmark's city is the pair (region, city) when
  the file has a `region` column (two regions may each have a "Springfield"), else its city.
- `image_metadata.csv`: `id, latitude, longitude` (the generator adds `split`).

Coordinates are decimal degrees; an empty field means unknown. Real GLDv2 ships neither file:
without them there is no geo scope and no city rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lmkcomp.csvfile import CsvTable, read_table, shown

#: kilometres per degree of latitude (and of longitude at the equator), on a sphere of radius 6378 km
KM_PER_DEGREE = 111.32


def _coordinates(table: CsvTable, column: str, limit: float) -> np.ndarray:
    """A latitude or longitude column as float64, NaN where empty; anything else is an error."""
    text = table.frame[column].str.strip()
    values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce").to_numpy(np.float64)
    bad = (np.isnan(values) & (text != "").to_numpy()) | (np.abs(values) > limit)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = shown(table.frame[column].iloc[row])
        raise table.error(row, f"{column} {value} is not a number in [-{limit}, {limit}]")
    return values


@dataclass(frozen=True)
class LandmarkMetadata:
    """Per landmark (ascending `landmark_ids`): a city code (-1: unknown), latitude, longitude
    (NaN: unknown). `cities[code]` is the city's name."""

    landmark_ids: np.ndarray
    city_codes: np.ndarray
    latitudes: np.ndarray
    longitudes: np.ndarray
    cities: tuple[str, ...]

    def _positions(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        landmarks = np.asarray(landmarks, dtype=np.int64)
        if len(self.landmark_ids) == 0:
            return np.zeros(landmarks.shape, dtype=np.int64), np.zeros(landmarks.shape, dtype=bool)
        positions = np.minimum(np.searchsorted(self.landmark_ids, landmarks), len(self.landmark_ids) - 1)
        return positions, self.landmark_ids[positions] == landmarks

    def city_of(self, landmarks: np.ndarray) -> np.ndarray:
        """City code of each landmark (any shape); -1 for a landmark with no known city."""
        positions, known = self._positions(landmarks)
        return np.where(known, self.city_codes[positions], -1)

    def within_square(self, latitude: float, longitude: float, side_km: float) -> np.ndarray:
        """Landmarks (ascending ids) inside the square of `side_km` centred on the point.

        Definition: |dlat| * KM_PER_DEGREE <= side_km / 2 and
        |dlon| * KM_PER_DEGREE * cos(latitude) <= side_km / 2, with dlon wrapped to
        [-180, 180): the local equirectangular approximation, exact to well under 1 % at a few
        km away from the poles. Landmarks without coordinates are outside every square.
        """
        half_deg_lat = side_km / 2 / KM_PER_DEGREE
        near = np.abs(self.latitudes - latitude) <= half_deg_lat
        dlon = (self.longitudes[near] - longitude + 180.0) % 360.0 - 180.0
        km_per_deg_lon = KM_PER_DEGREE * max(np.cos(np.radians(latitude)), 1e-9)
        inside = np.abs(dlon) * km_per_deg_lon <= side_km / 2
        return self.landmark_ids[np.flatnonzero(near)[inside]]


def read_landmark_metadata(path: str | Path) -> LandmarkMetadata:
    """Read `landmark_metadata.csv` (see the module docstring); duplicate landmarks are errors."""
    table = read_table(path, ["landmark_id", "city", "latitude", "longitude"])
    frame = table.frame
    ids = frame["landmark_id"].str.strip()
    numeric = ids.str.fullmatch(r"\d+")
    if not numeric.all():
        row = int(np.flatnonzero(~numeric.to_numpy())[0])
        raise table.error(row, f"landmark_id {shown(ids.iloc[row])} is not a non-negative integer")
    landmark_ids = ids.astype(np.int64).to_numpy()
    duplicated = pd.Series(landmark_ids).duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise table.error(row, f"landmark_id {landmark_ids[row]} appears twice")
    city = frame["city"].str.strip()
    key = (frame["region"].str.strip() + "/" + city) if "region" in frame.columns else city
    names = sorted(set(key[city != ""]))
    code_of = {name: code for code, name in enumerate(names)}
    codes = np.array([code_of.get(k, -1) if c else -1 for k, c in zip(key, city)], dtype=np.int64)
    latitudes = _coordinates(table, "latitude", 90.0)
    longitudes = _coordinates(table, "longitude", 180.0)
    order = np.argsort(landmark_ids)
    return LandmarkMetadata(landmark_ids[order], codes[order], latitudes[order], longitudes[order], tuple(names))


def read_image_coordinates(path: str | Path, ids: Sequence[str]) -> np.ndarray:
    """(latitude, longitude) of each of `ids` from `image_metadata.csv`, as an n x 2 float64
    array; NaN for an id the file does not list or lists without coordinates."""
    table = read_table(path, ["id", "latitude", "longitude"])
    frame = table.frame
    coordinates = np.stack([_coordinates(table, "latitude", 90.0),
                            _coordinates(table, "longitude", 180.0)], axis=1)
    position = pd.Series(np.arange(len(frame)), index=frame["id"].str.strip())
    if position.index.duplicated().any():
        row = int(np.flatnonzero(position.index.duplicated())[0])
        raise table.error(row, f"id {position.index[row]} appears twice")
    rows = position.reindex(list(ids)).to_numpy()
    out = np.full((len(ids), 2), np.nan)
    known = ~np.isnan(rows)
    out[known] = coordinates[rows[known].astype(np.int64)]
    return out
