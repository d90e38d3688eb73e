"""England's population structure, as the simulator draws it.

Figures are rounded from the named publications; they set the shape of the simulated
population, and `reference.py` holds the disease figures it is checked against.
"""

from __future__ import annotations

import numpy as np

from farr.events.schema import ETHNICITIES, REGIONS

# Extract window: registered population on the start date, plus births and arrivals, followed to
# the end date, death or moving away.
EXTRACT_START = 2000.0  # decimal calendar year
EXTRACT_END = 2025.0
START_COHORT, BIRTHS, ARRIVALS = 0.72, 0.19, 0.09  # shares of everyone ever registered
MOVE_AWAY_PER_YEAR = 0.01  # emigration
ARRIVALS_MOVE_AWAY_PER_YEAR = 0.04  # many arrivals leave again

# ONS Census 2021, usual residents of England by five-year age band (TS007), thousands.
AGE_BANDS = np.arange(0, 95, 5)  # 0-4, ..., 85-89, 90+
AGE_BAND_THOUSANDS = np.array([3232, 3524, 3595, 3394, 3602, 3901, 4149, 3994, 3754, 3713, 4063,
                               3992, 3455, 2945, 2942, 2176, 1474, 883, 528], dtype=float)
# Share female by the same bands (Census 2021; women outlive men).
FEMALE_SHARE = np.array([0.488, 0.488, 0.488, 0.487, 0.494, 0.503, 0.506, 0.507, 0.506, 0.507,
                         0.507, 0.506, 0.510, 0.516, 0.526, 0.540, 0.560, 0.600, 0.690])
OLDEST_MEAN_EXCESS = 4.0  # mean years lived beyond 90 in the open-ended band

# ONS Census 2021, England: ethnic group shares (White, Asian, Black, Mixed, Other), all ages
# and by broad age.
ETHNICITY_CENSUS_2021 = [0.810, 0.096, 0.042, 0.030, 0.022]
ETHNICITY_BY_AGE = {  # lower age bound -> shares
    0: [0.72, 0.14, 0.06, 0.06, 0.02],
    18: [0.80, 0.105, 0.045, 0.025, 0.025],
    65: [0.92, 0.045, 0.02, 0.005, 0.01],
}

# NHS England regions: population (millions, ONS mid-2021 by NHS region), integrated care boards
# per region (42 in all), relative odds of belonging to an ethnic minority group, and the share
# of residents in each IMD 2019 quintile (1 = most deprived).
REGION_MILLIONS = [8.6, 7.4, 10.9, 6.4, 8.8, 9.3, 5.7]
REGION_ICBS = [4, 3, 11, 6, 5, 6, 7]
REGION_MINORITY_ODDS = [0.8, 0.9, 1.2, 0.7, 3.4, 0.7, 0.35]
REGION_IMD = [
    [0.30, 0.21, 0.18, 0.16, 0.15],
    [0.32, 0.18, 0.17, 0.16, 0.17],
    [0.24, 0.20, 0.19, 0.19, 0.18],
    [0.10, 0.17, 0.22, 0.25, 0.26],
    [0.20, 0.32, 0.24, 0.15, 0.09],
    [0.09, 0.14, 0.21, 0.26, 0.30],
    [0.10, 0.18, 0.25, 0.26, 0.21],
]
# Relative chance of each IMD quintile by ethnic group (minority groups live in more deprived areas).
ETHNICITY_IMD_TILT = [
    [1.0, 1.0, 1.0, 1.0, 1.0],
    [1.5, 1.2, 0.9, 0.7, 0.6],
    [1.7, 1.3, 0.8, 0.6, 0.4],
    [1.3, 1.1, 1.0, 0.85, 0.8],
    [1.4, 1.2, 0.9, 0.75, 0.7],
]
REGION_PRACTICE_LETTER = "BNMDEGL"  # ODS-style first letter of practice codes, by region
PATIENTS_PER_PRACTICE = 2000  # simulated list size (real lists average ~9,500)
MAX_PRACTICES = 6300  # about the number of GP practices in England

# Postcode areas by region, for identifiable extracts.
REGION_POSTCODE_AREAS = [
    ["LS", "NE", "YO", "S", "HU", "BD", "DL", "SR"],
    ["M", "L", "PR", "BL", "CH", "WA", "OL", "BB"],
    ["B", "NG", "LE", "CV", "DE", "ST", "WV", "NN"],
    ["CB", "NR", "IP", "CO", "PE", "LU", "CM", "SG"],
    ["E", "N", "SE", "SW", "W", "NW", "EC", "WC"],
    ["OX", "RG", "BN", "GU", "MK", "SO", "PO", "ME"],
    ["BS", "EX", "PL", "BA", "TR", "GL", "TA", "BH"],
]

# National data opt-out (~5.4% of patients, NHS Digital 2023) and type 1 opt-out, which
# overlap: together about 6%.
NATIONAL_OPT_OUT = 0.054
TYPE1_GIVEN_NATIONAL, TYPE1_GIVEN_NO_NATIONAL = 0.30, 0.008

assert len(REGION_MILLIONS) == len(REGIONS) and len(ETHNICITY_BY_AGE[0]) == len(ETHNICITIES)


def sites() -> tuple[np.ndarray, np.ndarray]:
    """Region of each integrated care board (site) and its share of its region's population."""
    region = np.repeat(np.arange(len(REGIONS)), REGION_ICBS)
    return region, np.ones(len(region)) / np.asarray(REGION_ICBS)[region]

