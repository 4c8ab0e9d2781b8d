"""``vsgrid ood``: how far a model's test fields lie from its training fields, in its own bottleneck;
``vsgrid bf-texture``: the statistics its no-model baseline measures the same by."""

from __future__ import annotations

from vsgrid.cli.options import OUT, QUIET, TEST_SET, config_of, option


def _ood(args) -> None:
    from vsgrid.evaluation.ood import write_ood

    print(
        write_ood(
            config_of(args), args.model, args.test_set, args.out, train_fields=args.train_fields
        )
    )


def _bf_texture(args) -> None:
    from vsgrid.evaluation.input_ood import write_bf_texture

    write_bf_texture(config_of(args), args.test_set, args.out, progress=not args.quiet)


COMMANDS = [
    (
        "ood",
        _ood,
        "score each test field's distance from the model's training fields (Mahalanobis, in the "
        "generator's bottleneck) and print each shifted test set's AUROC against the "
        "in-distribution one",
        [
            option("--model", required=True, help="e.g. lung-nontoxic.dapi.s0"),
            option(
                "--test-set",
                required=True,
                action="append",
                help="e.g. lung-toxic; repeat for more (the model's own train set is always scored)",
            ),
            OUT,
            option(
                "--train-fields",
                type=int,
                default=256,
                help="training fields of the reference, evenly spaced (default 256)",
            ),
        ],
    ),
    (
        "bf-texture",
        _bf_texture,
        "BF texture statistics of a test set's fields, the OOD score's no-model baseline",
        [TEST_SET, OUT, QUIET],
    ),
]
