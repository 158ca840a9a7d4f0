"""Hanging protocols (no Qt): which series of a study (and of its prior) go into which viewport, and how.

A :class:`Protocol` says when it applies (:class:`StudyMatch`: the study's modalities, body parts, description;
whether a prior is present) and how to lay the study out: an ordered list of :class:`DisplaySet` (a layout,
1x1 / 1x2 / 2x2, and one :class:`ViewportRule` per viewport).  A viewport rule picks an image from the current
study or the prior (:class:`SeriesCriteria`: modality, series description glob, body part, View Position,
laterality, Image Type; alternatives in order of preference), and says how to show it: a window preset (a name
of :data:`viewer.dicom.pixels.PRESETS`) or an explicit centre/width, invert, flips, and for mammography which
edge the chest wall goes to (the mirror-image hanging, from Patient Orientation).

Everything here is pure: :func:`choose` takes the protocols and :class:`~viewer.reading.study_facts.StudyFacts`
(plain data gathered from the library and first headers) and returns a :class:`Hanging`, whose display sets
are resolved into :class:`Placement` s (series UID + instance to show + display settings) by :func:`resolve`.

Decisions (docs/user-guide.md, "Hanging protocols"):

* The best protocol is the matching one of highest ``priority``, then the most specific (most criteria), then
  the one defined last (a user's over IT's over the shipped one's, by the order of loading).
* A viewport whose rule matches no image stays empty: hanging a different series where the reader expects, say,
  the prior's lung window would mislead.  A rule lists alternatives to fall back on when it wants one.
* An image already hung in the display set is used again only when no unused one matches.
* With no matching protocol, the fallback hangs every image series, one per display set, 1x1 (with a prior:
  1x2, the prior's most similar series on the right).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from viewer.dicom.pixels import PRESETS, Window
from viewer.limits import ALTERNATIVES_MAX, DISPLAY_SETS_MAX, PATTERNS_MAX, RULE_TEXT_CHARS_MAX
from viewer.reading.study_facts import ImageFacts, StudyFacts

LAYOUT_VIEWPORTS = {"1x1": 1, "1x2": 2, "2x2": 4}
STUDIES = ("current", "prior")
FALLBACK_NAME = "All series"


class ProtocolError(ValueError):
    """A protocol entry that cannot be used; the text says which part is wrong (one sentence)."""


# -- the model ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesCriteria:
    """What an image must be to fill a viewport.  Every criterion given must hold (empty: any); text compares
    case-insensitively; ``description`` holds glob patterns (``*``, ``?``), an earlier one preferred."""

    modalities: tuple[str, ...] = ()
    description: tuple[str, ...] = ()
    exclude_description: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()
    view_position: tuple[str, ...] = ()
    laterality: tuple[str, ...] = ()
    image_type: tuple[str, ...] = ()  # every value listed must be in the image's Image Type
    exclude_image_type: tuple[str, ...] = ()  # none of these may be

    def rank(self, image: ImageFacts) -> int | None:
        """None when `image` fails a criterion, else the index of the first description pattern it matches
        (0 without patterns): lower is preferred."""
        if self.modalities and image.modality.upper() not in self.modalities:
            return None
        if self.body_part and image.body_part.upper() not in self.body_part:
            return None
        if self.view_position and image.view_position.upper() not in self.view_position:
            return None
        if self.laterality and image.laterality.upper() not in self.laterality:
            return None
        kinds = {v.upper() for v in image.image_type}
        if not set(self.image_type) <= kinds or kinds & set(self.exclude_image_type):
            return None
        text = image.description.casefold()
        if any(fnmatch.fnmatchcase(text, p) for p in self.exclude_description):
            return None
        if not self.description:
            return 0
        return next((i for i, p in enumerate(self.description) if fnmatch.fnmatchcase(text, p)), None)


@dataclass(frozen=True)
class ViewportRule:
    """One viewport: the image (alternatives in order of preference, from the current study or the prior) and
    how to show it.  ``like``: prefer the image most like the one hung in that viewport (1-based) of the same
    display set (a prior's series matching the current one)."""

    study: str = "current"
    series: tuple[SeriesCriteria, ...] = (SeriesCriteria(),)
    like: int | None = None
    preset: str | None = None
    window: Window | None = None
    invert: bool = False
    flip_h: bool = False
    flip_v: bool = False
    chest_wall: str | None = None  # "left" / "right": flip left-right so the chest wall is at that edge


@dataclass(frozen=True)
class DisplaySet:
    name: str
    layout: str
    viewports: tuple[ViewportRule, ...]


@dataclass(frozen=True)
class StudyMatch:
    """When a protocol applies: every criterion given holds (any one of the values listed)."""

    modalities: tuple[str, ...] = ()  # the study holds images of one of these
    body_part: tuple[str, ...] = ()  # one of its image series has one of these Body Part Examined
    description: tuple[str, ...] = ()  # the study description matches one of these globs
    prior: bool | None = None  # True: only with a prior; False: only without; None: either

    def matches(self, study: StudyFacts, has_prior: bool) -> bool:
        images = study.images
        if self.prior is not None and self.prior != has_prior:
            return False
        if self.modalities and not any(i.modality.upper() in self.modalities for i in images):
            return False
        if self.body_part and not any(i.body_part.upper() in self.body_part for i in images):
            return False
        text = study.description.casefold()
        return not self.description or any(fnmatch.fnmatchcase(text, p) for p in self.description)

    @property
    def specificity(self) -> int:
        return sum(bool(x) for x in (self.modalities, self.body_part, self.description)) + (self.prior is not None)


@dataclass(frozen=True)
class Protocol:
    name: str
    match: tuple[StudyMatch, ...]  # alternatives: the protocol applies when one holds
    display_sets: tuple[DisplaySet, ...]
    priority: int = 0
    origin: str = "shipped"  # "shipped", "system" or "user": where it was defined

    def matching(self, study: StudyFacts, has_prior: bool) -> StudyMatch | None:
        return max((m for m in self.match if m.matches(study, has_prior)), key=lambda m: m.specificity, default=None)


@dataclass(frozen=True)
class Placement:
    """One viewport of a resolved display set: the image to show and how.  Where ``instance_uid`` lies in the
    series' display order is the window's business (it orders the frames)."""

    series_uid: str
    instance_uid: str | None  # None: the series' first slice; else that instance (a projection image)
    study: str
    preset: str | None = None
    window: Window | None = None
    invert: bool = False
    flip_h: bool = False
    flip_v: bool = False


@dataclass(frozen=True)
class Hanging:
    """A chosen protocol for one study (and prior): the display sets the reader steps through."""

    protocol: Protocol
    study: StudyFacts
    prior: StudyFacts | None = None
    _cache: dict[int, tuple[Placement | None, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def count(self) -> int:
        return len(self.protocol.display_sets)

    def placements(self, index: int) -> tuple[Placement | None, ...]:
        if index not in self._cache:
            self._cache[index] = resolve(self.protocol.display_sets[index], self.study, self.prior)
        return self._cache[index]

    def label(self, index: int) -> str:
        """What the status line says: "CT chest with prior - 1/2 Lung"."""
        display_set = self.protocol.display_sets[index]
        suffix = f" {display_set.name}" if display_set.name else ""
        return f"{self.protocol.name} - {index + 1}/{self.count}{suffix}"


# -- choosing and resolving -----------------------------------------------------------------------------------


def choose(protocols: Sequence[Protocol], study: StudyFacts, prior: StudyFacts | None = None) -> Hanging:
    """The best matching protocol for `study` (and `prior`), else the fallback (every image series)."""
    best: tuple[tuple[int, int, int], Protocol] | None = None
    for order, protocol in enumerate(protocols):
        found = protocol.matching(study, prior is not None)
        if found is None:
            continue
        key = (protocol.priority, found.specificity, order)
        if best is None or key > best[0]:
            best = (key, protocol)
    return Hanging(best[1] if best else fallback_protocol(study, prior), study, prior)


def fallback_protocol(study: StudyFacts, prior: StudyFacts | None = None) -> Protocol:
    """Every image series of `study`, one per display set: 1x1, or 1x2 with the prior's most similar series."""
    sets = []
    for image in study.series_images():
        left = ViewportRule(series=(_Pinned(series_uid=image.series_uid),))
        if prior is None:
            sets.append(DisplaySet(image.description, "1x1", (left,)))
        else:
            right = ViewportRule(study="prior", series=(SeriesCriteria(modalities=(image.modality.upper(),)),
                                                        SeriesCriteria()), like=1)
            sets.append(DisplaySet(image.description, "1x2", (left, right)))
    if not sets:
        sets.append(DisplaySet("", "1x1", (ViewportRule(),)))
    return Protocol(FALLBACK_NAME, (StudyMatch(),), tuple(sets), origin="fallback")


@dataclass(frozen=True)
class _Pinned(SeriesCriteria):
    """The fallback's criteria: exactly one series."""

    series_uid: str = ""

    def rank(self, image: ImageFacts) -> int | None:
        return 0 if image.series_uid == self.series_uid else None


def resolve(display_set: DisplaySet, study: StudyFacts, prior: StudyFacts | None) -> tuple[Placement | None, ...]:
    """The image for each viewport of `display_set` (None: the viewport stays empty)."""
    used: set[tuple[str, str | None]] = set()
    hung: list[ImageFacts | None] = []
    out: list[Placement | None] = []
    for rule in display_set.viewports[: LAYOUT_VIEWPORTS[display_set.layout]]:
        source = study if rule.study == "current" else prior
        model = hung[rule.like - 1] if rule.like is not None and 0 < rule.like <= len(hung) else None
        image = _pick(rule, source.images if source is not None else (), used, model)
        hung.append(image)
        if image is None:
            out.append(None)
            continue
        used.add(image.key)
        flip_h = rule.flip_h
        if rule.chest_wall is not None:
            flip_h ^= _chest_wall_needs_flip(image, rule.chest_wall)
        out.append(Placement(image.series_uid, image.instance_uid, rule.study, rule.preset, rule.window,
                             rule.invert, flip_h, rule.flip_v))
    return tuple(out)


def _pick(rule: ViewportRule, images: Sequence[ImageFacts], used: set, model: ImageFacts | None) -> ImageFacts | None:
    best: tuple[tuple, ImageFacts] | None = None
    for order, image in enumerate(images):
        for alternative, criteria in enumerate(rule.series):
            rank = criteria.rank(image)
            if rank is None:
                continue
            key = (image.key in used, alternative, rank, *(_unlikeness(model, image) if model else ()), order)
            if best is None or key < best[0]:
                best = (key, image)
            break
    return best[1] if best else None


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.casefold()))


def _unlikeness(model: ImageFacts, image: ImageFacts) -> tuple:
    """Sort key: how unlike `model` `image` is (lower: more alike)."""
    a, b = _words(model.description), _words(image.description)
    overlap = len(a & b) / len(a | b) if a | b else 0.0
    return (image.modality != model.modality, model.description.casefold().strip() != image.description.casefold().strip(),
            -overlap, image.body_part != model.body_part, image.view_position != model.view_position,
            image.laterality != model.laterality, abs(image.instance_count - model.instance_count))


def _chest_wall_needs_flip(image: ImageFacts, edge: str) -> bool:
    """Patient Orientation's row direction (PS3.3 C.7.6.1.1.1) says where the nipple (anterior) points: with
    columns increasing toward A the chest wall (posterior) is on the left edge."""
    row = image.patient_orientation[0].upper() if image.patient_orientation else ""
    if not row:
        return False
    chest_wall_left = row.startswith("A")
    chest_wall_right = row.startswith("P")
    return chest_wall_right if edge == "left" else chest_wall_left


# -- JSON -----------------------------------------------------------------------------------------------------


def _texts(data: Mapping, key: str, *, upper: bool = False, fold: bool = False) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > PATTERNS_MAX \
            or not all(isinstance(v, str) and 0 < len(v) <= RULE_TEXT_CHARS_MAX for v in value):
        raise ProtocolError(f"'{key}' must be a text or a list of up to {PATTERNS_MAX} short texts")
    return tuple(v.strip().upper() if upper else v.casefold() if fold else v for v in value)


def _known(data: Any, keys: Iterable[str], what: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{what} must be a JSON object")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ProtocolError(f"{what} has an unknown key '{unknown[0][:RULE_TEXT_CHARS_MAX]}'")
    return data


def _alternatives(data: Any, parse, what: str) -> tuple:
    items = data if isinstance(data, list) else [data]
    if not items or len(items) > ALTERNATIVES_MAX:
        raise ProtocolError(f"{what} must hold between 1 and {ALTERNATIVES_MAX} alternatives")
    return tuple(parse(item) for item in items)


_CRITERIA_KEYS = ("modality", "description", "exclude_description", "body_part", "view_position", "laterality",
                  "image_type", "exclude_image_type")


def criteria_from_json(data: Any) -> SeriesCriteria:
    data = _known(data, _CRITERIA_KEYS, "a series rule")
    return SeriesCriteria(
        modalities=_texts(data, "modality", upper=True), description=_texts(data, "description", fold=True),
        exclude_description=_texts(data, "exclude_description", fold=True),
        body_part=_texts(data, "body_part", upper=True), view_position=_texts(data, "view_position", upper=True),
        laterality=_texts(data, "laterality", upper=True), image_type=_texts(data, "image_type", upper=True),
        exclude_image_type=_texts(data, "exclude_image_type", upper=True))


def _flag(data: Mapping, key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"'{key}' must be true or false")
    return value


def _window(value: Any) -> tuple[str | None, Window | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        if value not in PRESETS:
            raise ProtocolError(f"the window '{value[:RULE_TEXT_CHARS_MAX]}' is not a preset (known: {', '.join(PRESETS)})")
        return value, None
    value = _known(value, ("center", "width"), "a window")
    c, w = value.get("center"), value.get("width")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e7 for v in (c, w)) or w <= 0:
        raise ProtocolError("a window needs a numeric 'center' and a positive 'width'")
    return None, Window(float(c), float(w))


def viewport_from_json(data: Any, position: int) -> ViewportRule:
    data = _known(data, ("study", "series", "like", "window", "invert", "flip_h", "flip_v", "chest_wall"),
                  f"viewport {position}")
    study = data.get("study", "current")
    if study not in STUDIES:
        raise ProtocolError(f"viewport {position}: 'study' must be \"current\" or \"prior\"")
    like = data.get("like")
    if like is not None and (not isinstance(like, int) or isinstance(like, bool) or not 1 <= like < position):
        raise ProtocolError(f"viewport {position}: 'like' must name an earlier viewport (1 to {position - 1})")
    chest_wall = data.get("chest_wall")
    if chest_wall not in (None, "left", "right"):
        raise ProtocolError(f"viewport {position}: 'chest_wall' must be \"left\" or \"right\"")
    preset, window = _window(data.get("window"))
    return ViewportRule(study=study, series=_alternatives(data.get("series", {}), criteria_from_json, "'series'"),
                        like=like, preset=preset, window=window, invert=_flag(data, "invert"),
                        flip_h=_flag(data, "flip_h"), flip_v=_flag(data, "flip_v"), chest_wall=chest_wall)


def display_set_from_json(data: Any) -> DisplaySet:
    data = _known(data, ("name", "layout", "viewports"), "a display set")
    layout = data.get("layout", "1x1")
    if layout not in LAYOUT_VIEWPORTS:
        raise ProtocolError(f"the layout must be one of {', '.join(LAYOUT_VIEWPORTS)}")
    name = data.get("name", "")
    if not isinstance(name, str) or len(name) > RULE_TEXT_CHARS_MAX:
        raise ProtocolError("a display set's 'name' must be a short text")
    raw = data.get("viewports")
    if not isinstance(raw, list) or not 1 <= len(raw) <= LAYOUT_VIEWPORTS[layout]:
        raise ProtocolError(f"layout {layout} takes a list of 1 to {LAYOUT_VIEWPORTS[layout]} viewports")
    return DisplaySet(name, layout, tuple(viewport_from_json(v, i + 1) for i, v in enumerate(raw)))


def match_from_json(data: Any) -> StudyMatch:
    data = _known(data, ("modality", "body_part", "description", "prior"), "'match'")
    prior = data.get("prior")
    if prior is not None and not isinstance(prior, bool):
        raise ProtocolError("'prior' must be true or false")
    return StudyMatch(_texts(data, "modality", upper=True), _texts(data, "body_part", upper=True),
                      _texts(data, "description", fold=True), prior)


def protocol_from_json(data: Any, origin: str = "shipped") -> Protocol:
    """One protocol from its JSON object; raises ProtocolError (naming the protocol when it has a name)."""
    name = data.get("name") if isinstance(data, Mapping) else None
    if not isinstance(name, str) or not name.strip() or len(name) > RULE_TEXT_CHARS_MAX:
        raise ProtocolError("a protocol needs a 'name' (a short text)")
    try:
        data = _known(data, ("name", "priority", "match", "display_sets"), "a protocol")
        priority = data.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > 10_000:
            raise ProtocolError("'priority' must be a whole number")
        sets = data.get("display_sets")
        if not isinstance(sets, list) or not 1 <= len(sets) <= DISPLAY_SETS_MAX:
            raise ProtocolError(f"'display_sets' must be a list of 1 to {DISPLAY_SETS_MAX}")
        return Protocol(name.strip(), _alternatives(data.get("match", {}), match_from_json, "'match'"),
                        tuple(display_set_from_json(s) for s in sets), priority, origin)
    except ProtocolError as exc:
        raise ProtocolError(f"the protocol '{name.strip()}': {exc}") from None
