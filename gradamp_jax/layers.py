"""What a "layer" is: the one place that groups parameters into layers (docs/method.md §2).

A parameter's layer is its path without the last key: ``conv1/kernel`` and ``conv1/bias``
form layer ``conv1``. Works for Linen parameter dicts and NNX ``State``.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax

PyTree = Any
Eligible = Union[None, str, Callable[[str], bool]]

ELIGIBLE_CHOICES = ("all", "kernels")


class LayerIndex(NamedTuple):
  """Static grouping of a parameter tree's leaves into layers.

  Attributes:
    names: layer names, ``/``-joined path keys, in the tree's flattening order.
    leaf_layer, leaf_sizes: each leaf's index in ``names``, and number of scalars.
    param_names: for each layer, the names of the parameters it owns (last keys).
  """

  names: tuple[str, ...]
  leaf_layer: tuple[int, ...]
  leaf_sizes: tuple[int, ...]
  param_names: tuple[tuple[str, ...], ...]

  @property
  def num_layers(self) -> int:
    return len(self.names)

  def layer_sizes(self) -> tuple[int, ...]:
    """Number of scalar parameters ``n`` of each layer (the paper's eq. 7)."""
    sizes = [0] * self.num_layers
    for layer, size in zip(self.leaf_layer, self.leaf_sizes):
      sizes[layer] += size
    return tuple(sizes)


def _key_str(key) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def layer_index(params: PyTree) -> LayerIndex:
  """Groups the leaves of ``params`` (or of any tree of the same structure) into layers.

  Raises:
    ValueError: if a leaf sits at the root (it has no layer) or the tree has no leaves.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  if not flat:
    raise ValueError("params: the parameter tree has no leaves, so it has no layers")
  owned: dict[str, list[str]] = {}  # layer name -> its parameters, in order of appearance
  leaf_layer, leaf_sizes = [], []
  for path, leaf in flat:
    path = tuple(path)
    while path and isinstance(path[-1], jax.tree_util.GetAttrKey):  # an NNX Variable's .value
      path = path[:-1]
    keys = [_key_str(k) for k in path]
    if len(keys) < 2:
      raise ValueError(
        f"params: leaf at path {'/'.join(keys) or '<root>'!r} is not inside a module; "
        "a layer is a parameter path without its last key"
      )
    name = "/".join(keys[:-1])
    owned.setdefault(name, []).append(keys[-1])
    leaf_layer.append(list(owned).index(name))
    leaf_sizes.append(int(getattr(leaf, "size", 1)))
  params_of = tuple(tuple(p) for p in owned.values())
  return LayerIndex(tuple(owned), tuple(leaf_layer), tuple(leaf_sizes), params_of)


def layer_names(params: PyTree) -> tuple[str, ...]:
  """Names of the layers of a parameter tree (docs/method.md §2): each path without its last key.

  Example:
    >>> layer_names({"conv": {"kernel": 0., "bias": 0.}, "bn": {"scale": 0., "bias": 0.}})
    ('bn', 'conv')
  """
  return layer_index(params).names


def eligible_mask(index: LayerIndex, eligible: Eligible) -> tuple[bool, ...]:
  """Which layers may be amplified and take part in the normalisation (docs/method.md §2):
  ``None``/``"all"``, ``"kernels"`` (layers owning a ``kernel``) or a predicate on the name.
  ValueError for another value, or when no layer is eligible."""
  if eligible is None or eligible == "all":
    mask = (True,) * index.num_layers
  elif eligible == "kernels":
    mask = tuple("kernel" in owned for owned in index.param_names)
  elif callable(eligible):
    mask = tuple(bool(eligible(name)) for name in index.names)
  else:
    raise ValueError(
      f"eligible: expected None, one of {ELIGIBLE_CHOICES} or a callable on the layer "
      f"name, got {eligible!r}"
    )
  if not any(mask):
    raise ValueError(
      f"eligible={eligible!r} leaves no layer among {len(index.names)} layers "
      f"(first: {list(index.names[:3])})"
    )
  return mask


def check_layer_count(index: LayerIndex, num_layers: int) -> None:
  """Refuses a tree of another number of layers than the parameters a state was made for."""
  if index.num_layers != num_layers:
    raise ValueError(
      f"the updates have {index.num_layers} layers but the params given to init had "
      f"{num_layers}; pass updates shaped like those params"
    )


def names_id(names: Sequence[str]) -> int:
  """CRC-32 of the layer names in order: kept in optimizer states to check reports."""
  return zlib.crc32("\n".join(names).encode())


def check_names(params: PyTree, state_names_id: int, state_num_layers: int) -> tuple[str, ...]:
  """The layer names of ``params``, after checking they are the ones a state was built for
  (ValueError when the number of layers or their names differ)."""
  names = layer_names(params)
  if len(names) != state_num_layers:
    raise ValueError(
      f"params have {len(names)} layers but the optimizer state has {state_num_layers}"
    )
  if names_id(names) != state_names_id:
    raise ValueError(
      f"params' layer names (first: {list(names[:3])}) are not the ones the optimizer "
      "state was built for; pass the parameters of the model the optimizer was "
      "initialised with"
    )
  return names


def network_order(fn: Callable[[PyTree], Any], params: PyTree) -> tuple[str, ...]:
  """The layer names in the order ``fn(params)`` first uses their parameters (for a forward
  pass, depth order), unused ones last in tree order. Traced only; nothing runs."""
  index = layer_index(params)
  leaves, treedef = jax.tree.flatten(params)
  jaxpr = jax.make_jaxpr(lambda *xs: fn(treedef.unflatten(list(xs))))(*leaves).jaxpr
  leaf_of = {id(v): i for i, v in enumerate(jaxpr.invars)}
  first = [len(jaxpr.eqns)] * index.num_layers  # the first equation reading each layer
  for step, eqn in reversed(list(enumerate(jaxpr.eqns))):
    for v in eqn.invars:
      if id(v) in leaf_of:
        first[index.leaf_layer[leaf_of[id(v)]]] = step
  return tuple(index.names[i] for i in sorted(range(index.num_layers), key=lambda i: (first[i], i)))


def find_instances(tree: PyTree, classes) -> list:
  """The nodes of ``tree`` that are instances of ``classes``, in tree order."""
  is_match = lambda x: isinstance(x, classes)
  return [x for x in jax.tree.leaves(tree, is_leaf=is_match) if is_match(x)]
