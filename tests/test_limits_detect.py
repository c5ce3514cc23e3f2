"""orch.limits.detect: usage-limit screens, read at a fixed clock and zone.

Every file in tests/data/usage-limit/ is one pane screen; its header (before `---`) says what the
detector must conclude (see the README there).  The expected values were worked out by hand.
"""

from datetime import datetime
from pathlib import Path

import pytest
from orch.limits import KINDS, Detection, detect

DATA = Path(__file__).parent / "data" / "usage-limit"
SCREENS = sorted(DATA.glob("*.txt"))


def _have_tzdb():
    from zoneinfo import ZoneInfo
    try:
        ZoneInfo("America/New_York")
    except Exception:  # noqa: BLE001 - any failure means no usable tz database here
        return False
    return True


needs_tzdb = pytest.mark.skipif(not _have_tzdb(), reason="no IANA time zone database")


def read_screen(path):
    head, sep, screen = path.read_text(encoding="utf-8").partition("\n---\n")
    assert sep, f"{path.name}: no '---' line"
    fields = {}
    for line in head.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields, screen


def epoch(iso):
    return datetime.fromisoformat(iso).timestamp()


def test_enough_screens():
    assert len(SCREENS) >= 30


@needs_tzdb
@pytest.mark.parametrize("path", SCREENS, ids=[p.stem for p in SCREENS])
def test_screen(path):
    want, screen = read_screen(path)
    got = detect(screen, epoch(want["now"]), want["local-tz"]).as_json()
    assert got["state"] == want["expect"]
    if want.get("kind") == "any":  # the screen's notice names no kind the file insists on
        assert got["kind"] in KINDS
    else:
        assert got["kind"] == (want["kind"] if want["expect"] == "limited" else None)
    assert got["reset"] == (None if want["reset"] == "none" else want["reset"])
    assert got["menu"] == (want.get("menu", "no") == "yes")


NOTICE = "  ⎿  5-hour limit reached ∙ resets 3pm\n\n> \n"


def test_bare_time_not_yet_passed_is_today():
    d = detect(NOTICE, epoch("2026-11-25T14:59:59Z"), "UTC")
    assert d.reset == epoch("2026-11-25T15:00:00Z")


def test_bare_time_passed_means_tomorrow():
    d = detect(NOTICE, epoch("2026-11-25T15:00:01Z"), "UTC")
    assert d.reset == epoch("2026-11-26T15:00:00Z")


def test_bare_time_equal_to_now_is_now():
    d = detect(NOTICE, epoch("2026-11-25T15:00:00Z"), "UTC")
    assert d.reset == epoch("2026-11-25T15:00:00Z")


@needs_tzdb
def test_passed_is_judged_in_the_reset_zone():
    # 23:30 UTC is already the 26th in Tokyo, where 8am has not come yet.
    d = detect("You've hit your limit · resets 8am (Asia/Tokyo)", epoch("2026-11-25T22:30:00Z"))
    assert d.as_json()["reset"] == "2026-11-25T23:00:00Z"
    assert d.tz == "Asia/Tokyo"


def test_date_without_year_skips_to_next_feb_29():
    d = detect("Weekly limit reached ∙ resets Feb 29, 9am", epoch("2026-11-25T20:00:00Z"), "UTC")
    assert d.as_json()["reset"] == "2028-02-29T09:00:00Z"


def test_twenty_four_hour_time():
    d = detect("Session limit reached ∙ resets 14:30", epoch("2026-11-25T12:00:00Z"), "UTC")
    assert d.as_json()["reset"] == "2026-11-25T14:30:00Z"


@needs_tzdb
def test_local_zone_defaults_to_the_process_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    d = detect(NOTICE, epoch("2026-11-25T12:00:00Z"))
    assert (d.as_json()["reset"], d.tz) == ("2026-11-25T20:00:00Z", "America/New_York")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "Not_A_Zone"])
def test_bad_zone_falls_back_to_local(zone):
    d = detect(f"You've hit your limit · resets 10pm ({zone})", epoch("2026-11-25T20:00:00Z"),
               "UTC")
    assert (d.state, d.as_json()["reset"], d.tz) == ("limited", "2026-11-25T22:00:00Z", "UTC")


def test_notice_without_reset_is_limited_with_no_reset():
    d = detect("  ⎿  Claude usage limit reached.\n", epoch("2026-11-25T20:00:00Z"), "UTC")
    assert (d.state, d.kind, d.reset, d.tz) == ("limited", "unknown", None, None)


def test_limit_notice_wins_over_transient_error():
    screen = ("  ⎿  API Error: Request rejected (429) · Retrying in 8 seconds…\n"
              "  ⎿  You've hit your session limit · resets 3pm\n")
    d = detect(screen, epoch("2026-11-25T12:00:00Z"), "UTC")
    assert (d.state, d.kind) == ("limited", "session")


def test_wrapped_notice_is_reported_joined():
    screen = "  ⎿  You've hit your weekly limit · resets Nov 28,\n     9am (UTC)\n"
    d = detect(screen, epoch("2026-11-25T20:00:00Z"), "UTC")
    assert d.line == "You've hit your weekly limit · resets Nov 28, 9am (UTC)"
    assert d.as_json()["reset"] == "2026-11-28T09:00:00Z"


def test_as_json_limited():
    d = detect("Claude AI usage limit reached|1749924000", epoch("2025-06-14T12:00:00Z"))
    assert d.as_json() == {"state": "limited", "kind": "unknown",
                           "reset": "2025-06-14T18:00:00Z", "tz": "UTC", "menu": False,
                           "line": "Claude AI usage limit reached|1749924000"}


def test_as_json_ok():
    d = detect("● Done.\n\n> \n", epoch("2026-11-25T20:00:00Z"), "UTC")
    assert d.as_json() == {"state": "ok", "kind": None, "reset": None, "tz": None,
                           "menu": False, "line": None}


def test_detection_is_immutable():
    d = detect("", 0.0, "UTC")
    assert isinstance(d, Detection)
    with pytest.raises(AttributeError):
        d.state = "limited"
