"""Verification: rounds of blinded reads, adjudication, consensus and the reader-study reports.

- ``rounds``: create (inter-reader, intra-reader re-read, automation bias), list, summarise, close.
- ``reads``: the blinded verification reads and adjudication.
- ``reports``: intra-reader and automation-bias reports (frozen dataclasses).

Final labels and their provenance (consensus of the current reads) are plain data: ``agreement.consensus``.

The use cases are re-exported here: ``from services import verification; verification.create_round(...)``.
"""

from services.verification.reads import adjudicate, next_adjudication, next_verification, submit_verification
from services.verification.reports import (
    ArmAgreement,
    AutomationBiasReport,
    IntraReaderReport,
    PairAgreement,
    RereadPair,
    automation_bias_report,
    intra_reader_report,
)
from services.verification.rounds import (
    ARMS,
    RoundCheck,
    assign_arms,
    check_round,
    close_round,
    create_reread_round,
    create_round,
    draw_sample,
    round_ratings,
    round_summary,
    rounds,
    send_to_verification,
)

__all__ = ["ARMS", "ArmAgreement", "AutomationBiasReport", "IntraReaderReport", "PairAgreement", "RereadPair",
           "RoundCheck", "adjudicate", "assign_arms", "automation_bias_report", "check_round", "close_round",
           "create_reread_round", "create_round", "draw_sample", "intra_reader_report", "next_adjudication",
           "next_verification", "round_ratings", "round_summary", "rounds", "send_to_verification",
           "submit_verification"]
