"""The registry of sample kinds.

Every sample in a realbogus dataset carries an integer ``kind``; the file attribute
``kind_names`` maps it to a name. ``kind`` says what the sample *is* (ground truth), while
``label`` says what the training set *claims* it is, so a label error is a sample whose kind's
true class differs from its label.

The codes are fixed (appended to, never reordered) so that files written by older versions keep
their meaning.
"""

from __future__ import annotations

__all__ = [
    "KIND_NAMES",
    "KIND_CODES",
    "REAL_KINDS",
    "BOGUS_KINDS",
    "TRAIN_REAL_KINDS",
    "TRAIN_BOGUS_KINDS",
    "TEST_REAL_KINDS",
    "HIDDEN_REAL_KINDS",
    "FAILED_INJECTION_KINDS",
    "VARIABLE_KINDS",
    "FIRST_ALERT_KIND",
    "UNKNOWN",
    "kind_code",
    "true_class_of_kind",
]

#: (name, true class) in code order. True class 1 = real astrophysical point source in the
#: difference image, 0 = bogus.
_KINDS: tuple[tuple[str, int], ...] = (
    ("unknown", -1),                   # 0: kind not known (external data)
    # --- training reals: artificial point sources injected into survey images
    ("galx_artificial_real", 1),       # 1: injected on or around a host galaxy
    ("rand_artificial_real", 1),       # 2: injected at a random position
    # --- test reals: actual transients (TNS-like)
    ("sn_in_host", 1),                 # 3: supernova offset from its host's nucleus
    ("sn_hostless", 1),                # 4: transient with no visible host
    ("nuclear_transient", 1),          # 5: transient at a galaxy nucleus
    # --- reals hidden among the "actual detections" labelled bogus (label errors 0 -> 1)
    ("asteroid", 1),                   # 6: moving object, absent from the reference
    ("unreported_transient", 1),       # 7: genuine transient among the bogus detections
    ("genuine_variable", 1),           # 8: star whose flux really changed
    # --- bogus: subtraction residuals
    ("dipole_residual", 0),            # 9: star subtracted with a small misalignment
    ("psf_mismatch_ring", 0),          # 10: star subtracted with the wrong PSF width
    ("galaxy_core_residual", 0),       # 11: residual of a galaxy's bright core
    ("saturated_star", 0),             # 12: residual of a saturated star (flat top, bleed)
    ("variable_star_no_change", 0),    # 13: star with photometric-scaling residual only
    # --- bogus: detector and environment
    ("cosmic_ray", 0),                 # 14: sharp hit in the new image
    ("hot_pixel", 0),                  # 15: single pixel with high dark current
    ("warm_pixel", 0),                 # 16: weaker, temperature-dependent hot pixel
    ("column_defect", 0),              # 17: bright or dark column segment (CMOS readout)
    ("row_defect", 0),                 # 18: bright or dark row segment
    ("rts_pixel", 0),                  # 19: random-telegraph pixel switching between levels
    ("amp_glow", 0),                   # 20: amplifier glow gradient near a sensor edge
    ("streak", 0),                     # 21: satellite or aircraft trail
    ("crosstalk_ghost", 0),            # 22: electronic crosstalk / optical ghost
    ("edge_masked", 0),                # 23: sensor edge or masked region in the stamp
    ("noise_peak", 0),                 # 24: background fluctuation above threshold
    # --- injections that did not produce a real source (label errors 1 -> 0)
    ("injection_on_saturated", 0),     # 25: injected onto a saturated star, lost in it
    ("injection_on_bad_pixel", 0),     # 26: injected onto a defect that dominates the stamp
    ("injection_too_faint", 0),        # 27: injected far below the detection limit
    # --- training reals added later (appended to keep the codes above)
    ("star_artificial_real", 1),       # 28: injected onto a field star (a variable-star-like change)
    # --- kinds modelled on real survey alerts (appended later)
    ("bright_star_residual", 0),       # 29: detection in the wings, spikes or bleed of a bright star
    ("variable_star", 1),              # 30: genuine brightening of a star (real for ZTF's labels)
    ("nuclear_variable", 1),           # 31: genuine change of a galaxy nucleus (AGN-like)
    ("star_core_residual", 0),         # 32: subtraction residual on the core of a bright star, either sign
)

KIND_NAMES: tuple[str, ...] = tuple(name for name, _ in _KINDS)
#: Code of the first kind modelled on real survey alerts. Kinds from here on take part in a
#: simulation only when its configuration asks for them, so configurations that do not produce
#: the same data (and files) as before these kinds existed.
FIRST_ALERT_KIND = 29
KIND_CODES: dict[str, int] = {name: code for code, name in enumerate(KIND_NAMES)}
_TRUE_CLASS: tuple[int, ...] = tuple(cls for _, cls in _KINDS)

UNKNOWN = 0
TRAIN_REAL_KINDS = ("galx_artificial_real", "rand_artificial_real", "star_artificial_real")
TEST_REAL_KINDS = ("sn_in_host", "sn_hostless", "nuclear_transient")
HIDDEN_REAL_KINDS = ("asteroid", "unreported_transient", "genuine_variable")
FAILED_INJECTION_KINDS = ("injection_on_saturated", "injection_on_bad_pixel", "injection_too_faint")
#: Genuine changes of a static source (a star, a galaxy nucleus). Whether a survey labels them real
#: is its own choice: ZTF does; the Tomo-e preset keeps them among the bogus (``genuine_variable``).
VARIABLE_KINDS = ("variable_star", "nuclear_variable")
REAL_KINDS = tuple(n for n, c in _KINDS if c == 1)
BOGUS_KINDS = tuple(n for n, c in _KINDS if c == 0)
#: Bogus kinds drawn as ordinary "actual detections".
TRAIN_BOGUS_KINDS = tuple(n for n in BOGUS_KINDS if n not in FAILED_INJECTION_KINDS)


def kind_code(name: str) -> int:
    """Return the integer code of kind ``name``.

    Raises
    ------
    KeyError
        If ``name`` is not a registered kind; the message lists the valid names.
    """
    try:
        return KIND_CODES[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r}; valid kinds: {', '.join(KIND_NAMES)}") from None


def true_class_of_kind(code: int) -> int:
    """Return the true class (1 real, 0 bogus, -1 unknown) of a kind code."""
    return _TRUE_CLASS[int(code)]
