"""Checks for the course's exercises: run a student's code on controlled inputs and say,
in plain words, which common GAN mistake it makes and how to fix it.

In a notebook, in the manner of Kaggle's learntools:

    from gan_helpers.checks import generator_exercise as ex1
    ex1.check(FCGenerator)     # prints feedback; raises NotYet until it passes
    ex1.hint()
    ex1.solution()             # the package's reference code

or the short forms ``check_generator(FCGenerator)``, ``check_discriminator(...)``,
``check_losses(bce, generator_loss, discriminator_loss)``, ``check_train_step(fn)``,
``check_dcgan_generator(cls)``, ``check_dcgan_discriminator(cls)``. Checks never raise:
code that is not written yet (``NotImplementedError``) or that crashes gets a message, not
a traceback. Given an instance instead of a class, they work on a copy of it, so the
student's network leaves the check as it came (mode and weights).

Each course notebook ends with questions checked the same way
(``gan_helpers.checks.questions``: ``scaled_191_exercise.check(scaled_191)``).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .. import losses as reference_losses
from .. import models as reference_models
from .. import step as reference_step
from .exercise import CheckResult, Exercise, Mistake, NotYet, close_solutions
from .losses import _check_losses
from .networks import (_check_dcgan_discriminator, _check_dcgan_generator, _check_discriminator,
                       _check_generator)
from .questions import (QUESTIONS, collapsed_batch_std_exercise, d_loss_value_exercise,
                        gradient_ratio_exercise, last_layer_parameters_exercise,
                        optimal_d_value_exercise, optimal_d_where_g_denser_exercise,
                        scaled_191_exercise, seed_batches_of_128_exercise,
                        smoothed_least_loss_exercise, strided_conv_size_exercise,
                        transposed_conv_size_exercise, without_detach_exercise)
from .train_step import _check_train_step

generator_exercise = Exercise(
    "generator", "the FC generator", ("FCGenerator",), _check_generator,
    "four nn.Linear layers 100->128->256->512->784; nn.LeakyReLU(0.2) after the first "
    "three, nn.Tanh() after the last; in forward, reshape to (N, 1, 28, 28).",
    (reference_models.FCGenerator,),
)
discriminator_exercise = Exercise(
    "discriminator", "the FC discriminator", ("FCDiscriminator",), _check_discriminator,
    "flatten to (N, 784); nn.Linear 784->512->256->1 with nn.LeakyReLU(0.2) between; "
    "nn.Sigmoid() at the end only when logits is False.",
    (reference_models.FCDiscriminator,),
)
losses_exercise = Exercise(
    "losses", "BCE and the two GAN losses", ("bce", "generator_loss", "discriminator_loss"),
    _check_losses,
    "bce = -(t * log(o) + (1 - t) * log(1 - o)).mean(); G's loss is criterion(d_on_fake, "
    "ones); D's is (criterion(d_on_real, ones) + criterion(d_on_fake, zeros)) / 2.",
    (reference_losses.generator_loss, reference_losses.discriminator_loss),
)
train_step_exercise = Exercise(
    "train_step", "the training step", ("train_step",), _check_train_step,
    "opt_g.zero_grad(); fake = generator(z); generator_loss(criterion, "
    "discriminator(fake)); backward; opt_g.step(). Then opt_d.zero_grad(); "
    "discriminator_loss(criterion, ...) on real and on fake.detach(); backward; "
    "opt_d.step(). Use the criterion you are given, not one of your own.",
    (reference_step.train_step,),
)
dcgan_generator_exercise = Exercise(
    "dcgan_generator", "the DCGAN generator", ("DCGANGenerator",), _check_dcgan_generator,
    "view z as (N, 100, 1, 1); ConvTranspose2d to 4x4 (kernel 4, stride 1), then 7x7 "
    "(kernel 3, stride 2, padding 1), 14x14 and 28x28 (kernel 4, stride 2, padding 1); "
    "BatchNorm2d + ReLU after each but the last, Tanh at the end.",
    (reference_models.DCGANGenerator,),
)

dcgan_discriminator_exercise = Exercise(
    "dcgan_discriminator", "the DCGAN discriminator", ("DCGANDiscriminator",),
    _check_dcgan_discriminator,
    "Conv2d(1, 32, 4, 2, 1) to 14x14, then (32 -> 64, kernel 4, stride 2, padding 1) to "
    "7x7 and (64 -> 128, kernel 3, stride 2, padding 1) to 4x4, then Conv2d(128, 1, 4) to "
    "1x1; nn.LeakyReLU(0.2) after each but the last, BatchNorm2d before it in the middle "
    "two; nn.Sigmoid() at the end and .view(-1, 1).",
    (reference_models.DCGANDiscriminator,),
)

EXERCISES = (generator_exercise, discriminator_exercise, losses_exercise, train_step_exercise,
             dcgan_generator_exercise, dcgan_discriminator_exercise, *QUESTIONS)


def check_generator(student: type | nn.Module) -> CheckResult:
    """Check a student's FC generator class (or instance)."""
    return generator_exercise.report(student)


def check_discriminator(student: type | nn.Module) -> CheckResult:
    """Check a student's FC discriminator class (taking ``logits=``) or instance."""
    return discriminator_exercise.report(student)


def check_losses(
    bce: Callable, generator_loss: Callable, discriminator_loss: Callable
) -> CheckResult:
    """Check a student's ``bce(o, t)``, ``generator_loss(criterion, d_on_fake)`` and
    ``discriminator_loss(criterion, d_on_real, d_on_fake)``."""
    return losses_exercise.report(bce, generator_loss, discriminator_loss)


def check_train_step(train_step: Callable) -> CheckResult:
    """Check a student's ``train_step(generator, discriminator, opt_g, opt_d, criterion,
    real, z)``."""
    return train_step_exercise.report(train_step)


def check_dcgan_generator(student: type | nn.Module) -> CheckResult:
    """Check a student's DCGAN generator class (or instance)."""
    return dcgan_generator_exercise.report(student)


def check_dcgan_discriminator(student: type | nn.Module) -> CheckResult:
    """Check a student's DCGAN discriminator class (or instance)."""
    return dcgan_discriminator_exercise.report(student)


__all__ = ["CheckResult", "EXERCISES", "Exercise", "QUESTIONS", "Mistake", "NotYet",
           "close_solutions",
           "check_dcgan_discriminator", "check_dcgan_generator", "check_discriminator",
           "check_generator", "check_losses", "check_train_step", "dcgan_discriminator_exercise",
           "dcgan_generator_exercise", "discriminator_exercise", "generator_exercise",
           "losses_exercise", "train_step_exercise", *(f"{q.name}_exercise" for q in QUESTIONS)]
