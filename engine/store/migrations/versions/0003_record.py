"""The unified patient record: patients, identifiers, demographics, visits, clinical facts, appointments,
orders and results, financial transactions, merges, identity conflicts, history (engine/record/schema.py).

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision (see 0001).
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "record_history",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("entity", sa.String(length=40), nullable=False),
        sa.Column("entity_id", sa.BigInteger(), nullable=False),
        sa.Column("field", sa.String(length=60), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("cause", sa.String(length=60), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_record_history_message_id_messages", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_history"),
    )
    op.create_index("ix_record_history_entity_entity_id", "record_history", ["entity", "entity_id"])
    op.create_index("ix_record_history_message_id", "record_history", ["message_id"])
    op.create_table(
        "record_patients",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.Column("merged_into_id", RowId, nullable=True),
        sa.Column("birth_date", sa.String(length=10), nullable=True),
        sa.Column("sex", sa.String(length=20), nullable=True),
        sa.Column("language", sa.String(length=100), nullable=True),
        sa.Column("marital_status", sa.String(length=100), nullable=True),
        sa.Column("deceased", sa.Boolean(), nullable=True),
        sa.Column("deceased_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["merged_into_id"],
            ["record_patients.id"],
            name="fk_record_patients_merged_into_id_record_patients",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_patients_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_patients"),
    )
    op.create_index("ix_record_patients_birth_date", "record_patients", ["birth_date"])
    op.create_index("ix_record_patients_merged_into_id", "record_patients", ["merged_into_id"])
    op.create_index("ix_record_patients_message_id", "record_patients", ["message_id"])
    op.create_table(
        "record_addresses",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("line1", sa.String(length=200), nullable=True),
        sa.Column("line2", sa.String(length=200), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("state", sa.String(length=100), nullable=True),
        sa.Column("postal_code", sa.String(length=20), nullable=True),
        sa.Column("country", sa.String(length=100), nullable=True),
        sa.Column("address_type", sa.String(length=10), nullable=True),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_addresses_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_addresses_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_addresses"),
    )
    op.create_index("ix_record_addresses_message_id", "record_addresses", ["message_id"])
    op.create_index("ix_record_addresses_patient_id", "record_addresses", ["patient_id"])
    op.create_table(
        "record_allergies",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("text", sa.String(length=500), nullable=True),
        sa.Column("system", sa.String(length=100), nullable=True),
        sa.Column("allergy_type", sa.String(length=20), nullable=True),
        sa.Column("severity", sa.String(length=20), nullable=True),
        sa.Column("reaction", sa.String(length=500), nullable=True),
        sa.Column("identified_date", sa.String(length=10), nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_allergies_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_allergies_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_allergies"),
    )
    op.create_index("ix_record_allergies_message_id", "record_allergies", ["message_id"])
    op.create_index("ix_record_allergies_patient_id", "record_allergies", ["patient_id"])
    op.create_table(
        "record_applied_messages",
        sa.Column("message_id", RowId, autoincrement=False, nullable=False),
        sa.Column("applied_at", Timestamp, nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("message_time", Timestamp, nullable=False),
        sa.Column("patient_id", RowId, nullable=True),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_applied_messages_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["record_patients.id"],
            name="fk_record_applied_messages_patient_id_record_patients",
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_record_applied_messages"),
    )
    op.create_table(
        "record_conflicts",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("patient_id", RowId, nullable=True),
        sa.Column("other_patient_id", RowId, nullable=True),
        sa.Column("authority", sa.String(length=227), nullable=True),
        sa.Column("value", sa.String(length=199), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("resolved_at", Timestamp, nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_conflicts_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["other_patient_id"],
            ["record_patients.id"],
            name="fk_record_conflicts_other_patient_id_record_patients",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_conflicts_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_conflicts"),
    )
    op.create_index("ix_record_conflicts_message_id", "record_conflicts", ["message_id"])
    op.create_index("ix_record_conflicts_other_patient_id", "record_conflicts", ["other_patient_id"])
    op.create_index("ix_record_conflicts_patient_id", "record_conflicts", ["patient_id"])
    op.create_table(
        "record_contacts",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(length=200), nullable=True),
        sa.Column("given", sa.String(length=200), nullable=True),
        sa.Column("relationship_code", sa.String(length=100), nullable=True),
        sa.Column("relationship_text", sa.String(length=500), nullable=True),
        sa.Column("relationship_system", sa.String(length=100), nullable=True),
        sa.Column("phone", sa.String(length=100), nullable=True),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_contacts_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_contacts_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_contacts"),
    )
    op.create_index("ix_record_contacts_message_id", "record_contacts", ["message_id"])
    op.create_index("ix_record_contacts_patient_id", "record_contacts", ["patient_id"])
    op.create_table(
        "record_coverages",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("plan_id", sa.String(length=100), nullable=True),
        sa.Column("plan_name", sa.String(length=200), nullable=True),
        sa.Column("company_id", sa.String(length=100), nullable=True),
        sa.Column("company_name", sa.String(length=200), nullable=True),
        sa.Column("group_number", sa.String(length=100), nullable=True),
        sa.Column("group_name", sa.String(length=200), nullable=True),
        sa.Column("policy_number", sa.String(length=100), nullable=True),
        sa.Column("member_number", sa.String(length=100), nullable=True),
        sa.Column("insured_name", sa.String(length=200), nullable=True),
        sa.Column("relationship", sa.String(length=20), nullable=True),
        sa.Column("effective_date", sa.String(length=10), nullable=True),
        sa.Column("expiration_date", sa.String(length=10), nullable=True),
        sa.Column("medicare_number", sa.String(length=100), nullable=True),
        sa.Column("medicaid_number", sa.String(length=100), nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_coverages_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_coverages_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_coverages"),
    )
    op.create_index("ix_record_coverages_message_id", "record_coverages", ["message_id"])
    op.create_index("ix_record_coverages_patient_id", "record_coverages", ["patient_id"])
    op.create_table(
        "record_identifiers",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("authority", sa.String(length=227), nullable=False),
        sa.Column("value", sa.String(length=199), nullable=False),
        sa.Column("type_code", sa.String(length=20), nullable=False),
        sa.Column("source_system", sa.String(length=227), nullable=False),
        sa.Column("alias", sa.Boolean(), nullable=False),
        sa.Column("link_reason", sa.Text(), nullable=False),
        sa.Column("linked_at", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_identifiers_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_identifiers_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_identifiers"),
        sa.UniqueConstraint("authority", "value", name="uq_record_identifiers_authority_value"),
    )
    op.create_index("ix_record_identifiers_message_id", "record_identifiers", ["message_id"])
    op.create_index("ix_record_identifiers_patient_id", "record_identifiers", ["patient_id"])
    op.create_index("ix_record_identifiers_value", "record_identifiers", ["value"])
    op.create_table(
        "record_merges",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("survivor_id", RowId, nullable=False),
        sa.Column("prior_id", RowId, nullable=True),
        sa.Column("prior_identifiers", sa.JSON(), nullable=False),
        sa.Column("event", sa.String(length=10), nullable=False),
        sa.Column("merged_at", Timestamp, nullable=False),
        sa.Column("moved", sa.JSON(), nullable=False),
        sa.Column("unmerged_at", Timestamp, nullable=True),
        sa.Column("unmerge_reason", sa.Text(), nullable=True),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_record_merges_message_id_messages", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["prior_id"], ["record_patients.id"], name="fk_record_merges_prior_id_record_patients"
        ),
        sa.ForeignKeyConstraint(
            ["survivor_id"], ["record_patients.id"], name="fk_record_merges_survivor_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_merges"),
    )
    op.create_index("ix_record_merges_message_id", "record_merges", ["message_id"])
    op.create_index("ix_record_merges_prior_id", "record_merges", ["prior_id"])
    op.create_index("ix_record_merges_survivor_id", "record_merges", ["survivor_id"])
    op.create_table(
        "record_names",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(length=200), nullable=True),
        sa.Column("given", sa.String(length=200), nullable=True),
        sa.Column("middle", sa.String(length=200), nullable=True),
        sa.Column("prefix", sa.String(length=50), nullable=True),
        sa.Column("suffix", sa.String(length=50), nullable=True),
        sa.Column("name_type", sa.String(length=10), nullable=True),
        sa.Column("family_key", sa.String(length=200), nullable=True),
        sa.Column("given_key", sa.String(length=200), nullable=True),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_record_names_message_id_messages", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_names_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_names"),
    )
    op.create_index("ix_record_names_family_key", "record_names", ["family_key"])
    op.create_index("ix_record_names_message_id", "record_names", ["message_id"])
    op.create_index("ix_record_names_patient_id", "record_names", ["patient_id"])
    op.create_table(
        "record_telecoms",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("use", sa.String(length=10), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=True),
        sa.Column("use_code", sa.String(length=10), nullable=True),
        sa.Column("equipment", sa.String(length=10), nullable=True),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_telecoms_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_telecoms_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_telecoms"),
    )
    op.create_index("ix_record_telecoms_message_id", "record_telecoms", ["message_id"])
    op.create_index("ix_record_telecoms_patient_id", "record_telecoms", ["patient_id"])
    op.create_table(
        "record_visits",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("visit_number", sa.String(length=199), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("patient_class", sa.String(length=10), nullable=True),
        sa.Column("point_of_care", sa.String(length=100), nullable=True),
        sa.Column("room", sa.String(length=100), nullable=True),
        sa.Column("bed", sa.String(length=100), nullable=True),
        sa.Column("facility", sa.String(length=100), nullable=True),
        sa.Column("prior_location", sa.String(length=200), nullable=True),
        sa.Column("attending_id", sa.String(length=100), nullable=True),
        sa.Column("attending_name", sa.String(length=200), nullable=True),
        sa.Column("referring_id", sa.String(length=100), nullable=True),
        sa.Column("referring_name", sa.String(length=200), nullable=True),
        sa.Column("hospital_service", sa.String(length=20), nullable=True),
        sa.Column("admit_reason", sa.String(length=500), nullable=True),
        sa.Column("discharge_disposition", sa.String(length=20), nullable=True),
        sa.Column("admitted_at", Timestamp, nullable=True),
        sa.Column("discharged_at", Timestamp, nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_record_visits_message_id_messages", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_visits_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_visits"),
    )
    op.create_index("ix_record_visits_message_id", "record_visits", ["message_id"])
    op.create_index("ix_record_visits_patient_id", "record_visits", ["patient_id"])
    op.create_index("ix_record_visits_visit_number", "record_visits", ["visit_number"])
    op.create_table(
        "record_appointments",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("visit_id", RowId, nullable=True),
        sa.Column("placer_id", sa.String(length=100), nullable=True),
        sa.Column("filler_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("event", sa.String(length=10), nullable=True),
        sa.Column("start_at", Timestamp, nullable=True),
        sa.Column("end_at", Timestamp, nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("reason_code", sa.String(length=100), nullable=True),
        sa.Column("reason_text", sa.String(length=500), nullable=True),
        sa.Column("reason_system", sa.String(length=100), nullable=True),
        sa.Column("type_code", sa.String(length=100), nullable=True),
        sa.Column("type_text", sa.String(length=500), nullable=True),
        sa.Column("type_system", sa.String(length=100), nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_appointments_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_appointments_patient_id_record_patients"
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["record_visits.id"], name="fk_record_appointments_visit_id_record_visits"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_appointments"),
    )
    op.create_index("ix_record_appointments_filler_id", "record_appointments", ["filler_id"])
    op.create_index("ix_record_appointments_message_id", "record_appointments", ["message_id"])
    op.create_index("ix_record_appointments_patient_id", "record_appointments", ["patient_id"])
    op.create_index("ix_record_appointments_placer_id", "record_appointments", ["placer_id"])
    op.create_table(
        "record_diagnoses",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("visit_id", RowId, nullable=True),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("text", sa.String(length=500), nullable=True),
        sa.Column("system", sa.String(length=100), nullable=True),
        sa.Column("diagnosis_type", sa.String(length=20), nullable=True),
        sa.Column("diagnosed_at", Timestamp, nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_diagnoses_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_diagnoses_patient_id_record_patients"
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["record_visits.id"], name="fk_record_diagnoses_visit_id_record_visits"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_diagnoses"),
    )
    op.create_index("ix_record_diagnoses_message_id", "record_diagnoses", ["message_id"])
    op.create_index("ix_record_diagnoses_patient_id", "record_diagnoses", ["patient_id"])
    op.create_index("ix_record_diagnoses_visit_id", "record_diagnoses", ["visit_id"])
    op.create_table(
        "record_orders",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("visit_id", RowId, nullable=True),
        sa.Column("placer_number", sa.String(length=100), nullable=True),
        sa.Column("filler_number", sa.String(length=100), nullable=True),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("text", sa.String(length=500), nullable=True),
        sa.Column("system", sa.String(length=100), nullable=True),
        sa.Column("order_control", sa.String(length=10), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=True),
        sa.Column("observed_at", Timestamp, nullable=True),
        sa.Column("reported_at", Timestamp, nullable=True),
        sa.Column("ordering_provider_id", sa.String(length=100), nullable=True),
        sa.Column("ordering_provider_name", sa.String(length=200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_record_orders_message_id_messages", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_orders_patient_id_record_patients"
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["record_visits.id"], name="fk_record_orders_visit_id_record_visits"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_orders"),
    )
    op.create_index("ix_record_orders_filler_number", "record_orders", ["filler_number"])
    op.create_index("ix_record_orders_message_id", "record_orders", ["message_id"])
    op.create_index("ix_record_orders_patient_id", "record_orders", ["patient_id"])
    op.create_index("ix_record_orders_placer_number", "record_orders", ["placer_number"])
    op.create_table(
        "record_procedures",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("visit_id", RowId, nullable=True),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("text", sa.String(length=500), nullable=True),
        sa.Column("system", sa.String(length=100), nullable=True),
        sa.Column("performed_at", Timestamp, nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_procedures_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_procedures_patient_id_record_patients"
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["record_visits.id"], name="fk_record_procedures_visit_id_record_visits"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_procedures"),
    )
    op.create_index("ix_record_procedures_message_id", "record_procedures", ["message_id"])
    op.create_index("ix_record_procedures_patient_id", "record_procedures", ["patient_id"])
    op.create_index("ix_record_procedures_visit_id", "record_procedures", ["visit_id"])
    op.create_table(
        "record_transactions",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("visit_id", RowId, nullable=True),
        sa.Column("transaction_id", sa.String(length=100), nullable=True),
        sa.Column("batch_id", sa.String(length=100), nullable=True),
        sa.Column("transaction_type", sa.String(length=10), nullable=False),
        sa.Column("transaction_at", Timestamp, nullable=True),
        sa.Column("posted_at", Timestamp, nullable=True),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("text", sa.String(length=500), nullable=True),
        sa.Column("system", sa.String(length=100), nullable=True),
        sa.Column("quantity", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("unit_amount", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("currency", sa.String(length=10), nullable=True),
        sa.Column("department", sa.String(length=100), nullable=True),
        sa.Column("procedure_code", sa.String(length=100), nullable=True),
        sa.Column("procedure_text", sa.String(length=500), nullable=True),
        sa.Column("procedure_system", sa.String(length=100), nullable=True),
        sa.Column("diagnoses", sa.JSON(), nullable=True),
        sa.Column("performed_by", sa.String(length=200), nullable=True),
        sa.Column("ordered_by", sa.String(length=200), nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_transactions_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_transactions_patient_id_record_patients"
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["record_visits.id"], name="fk_record_transactions_visit_id_record_visits"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_transactions"),
    )
    op.create_index("ix_record_transactions_message_id", "record_transactions", ["message_id"])
    op.create_index("ix_record_transactions_patient_id", "record_transactions", ["patient_id"])
    op.create_index("ix_record_transactions_visit_id", "record_transactions", ["visit_id"])
    op.create_table(
        "record_resources",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("appointment_id", RowId, nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("text", sa.String(length=500), nullable=True),
        sa.Column("system", sa.String(length=100), nullable=True),
        sa.Column("role", sa.String(length=200), nullable=True),
        sa.Column("start_at", Timestamp, nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["record_appointments.id"],
            name="fk_record_resources_appointment_id_record_appointments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_resources_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_resources"),
    )
    op.create_index("ix_record_resources_appointment_id", "record_resources", ["appointment_id"])
    op.create_index("ix_record_resources_message_id", "record_resources", ["message_id"])
    op.create_table(
        "record_observations",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("order_id", RowId, nullable=False),
        sa.Column("patient_id", RowId, nullable=False),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("text", sa.String(length=500), nullable=True),
        sa.Column("system", sa.String(length=100), nullable=True),
        sa.Column("sub_id", sa.String(length=20), nullable=False),
        sa.Column("occurrence", sa.Integer(), nullable=False),
        sa.Column("value_type", sa.String(length=10), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("numeric_value", sa.Float(), nullable=True),
        sa.Column("comparator", sa.String(length=2), nullable=True),
        sa.Column("separator", sa.String(length=2), nullable=True),
        sa.Column("numeric_high", sa.Float(), nullable=True),
        sa.Column("coded_code", sa.String(length=100), nullable=True),
        sa.Column("coded_text", sa.String(length=500), nullable=True),
        sa.Column("coded_system", sa.String(length=100), nullable=True),
        sa.Column("media_type", sa.String(length=100), nullable=True),
        sa.Column("encoding", sa.String(length=20), nullable=True),
        sa.Column("units", sa.String(length=100), nullable=True),
        sa.Column("reference_range", sa.String(length=100), nullable=True),
        sa.Column("abnormal_flags", sa.String(length=50), nullable=True),
        sa.Column("status", sa.String(length=2), nullable=False),
        sa.Column("observed_at", Timestamp, nullable=True),
        sa.Column("performing_lab", sa.String(length=200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("message_id", RowId, nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_record_observations_message_id_messages",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["record_orders.id"], name="fk_record_observations_order_id_record_orders"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["record_patients.id"], name="fk_record_observations_patient_id_record_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_record_observations"),
    )
    op.create_index("ix_record_observations_message_id", "record_observations", ["message_id"])
    op.create_index("ix_record_observations_order_id", "record_observations", ["order_id"])
    op.create_index("ix_record_observations_patient_id", "record_observations", ["patient_id"])


def downgrade() -> None:
    op.drop_table("record_observations")
    op.drop_table("record_resources")
    op.drop_table("record_transactions")
    op.drop_table("record_procedures")
    op.drop_table("record_orders")
    op.drop_table("record_diagnoses")
    op.drop_table("record_appointments")
    op.drop_table("record_visits")
    op.drop_table("record_telecoms")
    op.drop_table("record_names")
    op.drop_table("record_merges")
    op.drop_table("record_identifiers")
    op.drop_table("record_coverages")
    op.drop_table("record_contacts")
    op.drop_table("record_conflicts")
    op.drop_table("record_applied_messages")
    op.drop_table("record_allergies")
    op.drop_table("record_addresses")
    op.drop_table("record_patients")
    op.drop_table("record_history")
