"""How the duty desk writes numbers and durations for people (the JSON keeps the raw values).

- Phone numbers as a duty officer dials them: a Chinese mobile as its 11 digits
  (``13944541628``), a landline with its area code and a dash (``0743-4222110``), any other
  number in international format. The store keeps E.164 (``+867434222110``), which nobody
  dials from a desk phone.
- Durations in days, hours and minutes (``3天4小时``, ``5小时07分``, ``25分``), never hundreds of
  hours; a time relative to now never as a negative "ago".
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache


@lru_cache(maxsize=4096)
def phone(number: str) -> str:
    """``number`` (E.164, as stored) in the form a duty officer dials."""
    if not number.startswith("+"):
        return number
    if number.startswith("+86") and number[3:].isdigit():
        national = number[3:]
        if len(national) == 11 and national.startswith("1"):
            return national  # a mobile
        if national[:3] in ("400", "800") and len(national) == 10:
            return f"{national[:3]}-{national[3:6]}-{national[6:]}"  # a national service line
        if len(national) in (9, 10, 11) and (national[0] in "23456789" or national[:2] == "10"):
            # a landline: the area code is 2 digits for Beijing (10) and the 2x cities, else 3
            # (the rule phonenumbers follows, without its 0.15 s import on the 1 s path)
            area = 2 if national[:2] == "10" or national[0] == "2" else 3
            return f"0{national[:area]}-{national[area:]}"
    import phonenumbers  # a foreign number: rare, and only then worth the import

    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    if parsed.country_code == 86:
        national = str(parsed.national_number)
        area = phonenumbers.length_of_geographical_area_code(parsed)
        return f"0{national[:area]}-{national[area:]}" if area else f"0{national}"
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL))


def span(delta: timedelta) -> str:
    """A non-negative duration in Chinese: ``25分``, ``5小时07分``, ``3天4小时``.

    Minutes are whole (rounded down); from a day on, minutes are left out.
    """
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}天{hours}小时" if hours else f"{days}天"
    if hours:
        return f"{hours}小时{mins:02d}分"
    return f"{mins}分"


def ago(delta: timedelta, *, drill: bool = False) -> str:
    """How long ago something happened (``delta`` = now − then), for a ``（…）`` after its time.

    A time still ahead of now is no "−28m ago": a replayed drill runs on a clock ahead of the
    wall clock (``演练时间``); for anything else it is a clock difference between machines
    (``刚刚``).
    """
    if delta < timedelta(0):
        return "演练时间" if drill else "刚刚"
    return f"{span(delta)}前"


def relative(delta: timedelta) -> str:
    """A time relative to now (``delta`` = then − now): ``还有 X`` ahead, ``已过 X`` behind."""
    return f"还有 {span(delta)}" if delta >= timedelta(0) else f"已过 {span(-delta)}"


def before_onset(delta: timedelta | None) -> str:
    """When a place was reached, relative to the onset (``delta`` = onset − reached)."""
    if delta is None:
        return "—"
    return f"发生前 {span(delta)}" if delta >= timedelta(0) else f"发生后 {span(-delta)}"
