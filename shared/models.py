"""The base of every app's Keras model: serialization from the constructor's own arguments.

keras-hub's tasks write ``get_config`` by hand; here the arguments a model was built with are
its config. They are recorded when the model is created, for arguments of plain types (str, int,
float, bool, None and lists or dicts of them), so a model written as

    @keras.saving.register_keras_serializable(package="dlapps.APP")
    class MyModel(TaskModel):
        def __init__(self, vocabulary, units=64, **kwargs):
            ...  # === Layers === / === Functional Model === / === Config ===
            super().__init__(inputs=..., outputs=..., **kwargs)

saves and loads with ``model.save`` / ``keras.saving.load_model`` with no more code. Arguments
of other types (arrays, layers) are a programming error, reported when the model is saved.
"""

from __future__ import annotations

import functools
import inspect

import keras


class RecordsArguments:
    """The mixin behind TaskModel: records the constructor's arguments as the config."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kwargs):
            outermost = "_constructor_arguments" not in self.__dict__
            if outermost:  # a subclass of a subclass records its own arguments only
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop(next(iter(signature.parameters)))  # self
                for name, parameter in signature.parameters.items():
                    if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(arguments.pop(name))
                object.__setattr__(self, "_constructor_arguments", None)
            init(self, *args, **kwargs)
            if outermost:
                object.__setattr__(self, "_constructor_arguments", _plain(arguments, cls.__name__))

        recording_init.__signature__ = signature  # what Keras's own argument inspection reads
        cls.__init__ = recording_init

    def get_config(self):
        arguments = dict(self.__dict__.get("_constructor_arguments") or {})
        arguments.pop("name", None)
        return {"name": self.name, "trainable": self.trainable, **arguments}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class TaskModel(RecordsArguments, keras.Model):
    """A keras.Model whose config is the keyword arguments it was constructed with.

    (Keras's own auto-config does not reach Model subclasses: ``Model.__new__`` drops the
    arguments, so it would record only the defaults.)

    A direct subclass gets ``(RecordsArguments, keras.Model)`` as its bases in place of
    TaskModel: Keras turns a model built from inputs and outputs into a Functional one by
    rewriting the bases of its class chain up to keras.Model, and that rewrite must stay with
    the one class, not reach TaskModel and every other app's model through it.
    """

    def __init_subclass__(cls, **kwargs):
        if TaskModel in cls.__bases__:
            cls.__bases__ = tuple(
                part for base in cls.__bases__ for part in ((RecordsArguments, keras.Model) if base is TaskModel else (base,))
            )
        # cls is no longer a TaskModel, so the recording set-up is called by name, not by super()
        RecordsArguments.__dict__["__init_subclass__"].__func__(cls, **kwargs)


def _plain(value, owner: str):
    """`value` with tuples as lists, checked to be JSON-able: what a .keras config can hold."""
    if isinstance(value, dict):
        return {str(k): _plain(v, owner) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, owner) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return value.tolist()
    raise TypeError(f"{owner}: constructor argument of type {type(value).__name__} cannot be saved; pass plain values")
