"""Arguments of config files: ``configs/paper.py:model=resnet34,dataset=cifar100``."""

from __future__ import annotations

BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_arg(arg: str | None, **defaults) -> dict:
  """Parses ``"key=value,key=value"`` against typed defaults.

  Args:
    arg: the text after ``:`` in ``--config configs/x.py:ARG`` (may be None or empty).
    **defaults: every allowed key with its default, whose type a value takes.

  Raises:
    ValueError: for an unknown key, a malformed item or a value of the wrong type.

  Example:
    >>> parse_arg("model=vgg19,threshold=1.5", model="resnet18", threshold=1.0)
    {'model': 'vgg19', 'threshold': 1.5}
  """
  values = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep:
      raise ValueError(f"config argument {item!r}: expected key=value")
    if key not in defaults:
      raise ValueError(f"config argument {key!r}: unknown; allowed: {', '.join(defaults)}")
    values[key] = _convert(key, text.strip(), defaults[key])
  return values


def _convert(key, text, default):
  if default is None or isinstance(default, str):
    return text
  if isinstance(default, bool):
    if text.lower() not in BOOLEANS:
      raise ValueError(f"config argument {key}={text!r}: expected true or false")
    return BOOLEANS[text.lower()]
  try:
    return type(default)(text)
  except ValueError:
    raise ValueError(f"config argument {key}={text!r}: expected {type(default).__name__}") from None
