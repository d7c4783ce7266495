"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-21
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('campaign',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('config_yaml', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('stop_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_name'), ['name'], unique=True)

    op.create_table('candidate',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('formula', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('chemical_system', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('structure', sa.JSON(), nullable=True),
    sa.Column('structure_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('provenance', sa.JSON(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'structure_hash', name='uq_candidate_structure')
    )
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_candidate_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_candidate_chemical_system'), ['chemical_system'], unique=False)
        batch_op.create_index(batch_op.f('ix_candidate_formula'), ['formula'], unique=False)

    op.create_table('event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('ts', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('entity', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('entity_id', sa.Integer(), nullable=True),
    sa.Column('from_state', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('to_state', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index('ix_event_campaign_id_id', ['campaign_id', 'id'], unique=False)

    op.create_table('modelversion',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('n_train', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('checkpoint', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'kind', 'version', name='uq_model_version')
    )
    with op.batch_alter_table('modelversion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_modelversion_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('prediction',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('objective', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('mean', sa.Float(), nullable=False),
    sa.Column('std', sa.Float(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], ),
    sa.ForeignKeyConstraint(['model_version_id'], ['modelversion.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('candidate_id', 'model_version_id', 'objective', name='uq_prediction')
    )
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prediction_candidate_id'), ['candidate_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_prediction_model_version_id'), ['model_version_id'], unique=False)

    op.create_table('target',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=True),
    sa.Column('formula', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('acquisition_value', sa.Float(), nullable=True),
    sa.Column('predicted', sa.JSON(), nullable=True),
    sa.Column('best_yield', sa.Float(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('target', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_target_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_target_candidate_id'), ['candidate_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_target_formula'), ['formula'], unique=False)
        batch_op.create_index(batch_op.f('ix_target_state'), ['state'], unique=False)

    op.create_table('recipe',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('precursors', sa.JSON(), nullable=True),
    sa.Column('profile', sa.JSON(), nullable=True),
    sa.Column('atmosphere', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('planner', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('rationale', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('driving_force_mev_per_atom', sa.Float(), nullable=True),
    sa.Column('predicted_yield', sa.Float(), nullable=True),
    sa.Column('replaces_recipe_id', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['replaces_recipe_id'], ['recipe.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['target.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('recipe', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recipe_target_id'), ['target_id'], unique=False)

    op.create_table('experiment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('recipe_id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('target_yield', sa.Float(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.ForeignKeyConstraint(['recipe_id'], ['recipe.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['target.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('experiment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_experiment_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index('ix_experiment_campaign_state', ['campaign_id', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiment_recipe_id'), ['recipe_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiment_sample_id'), ['sample_id'], unique=True)
        batch_op.create_index(batch_op.f('ix_experiment_target_id'), ['target_id'], unique=False)

    op.create_table('stepcommand',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('step', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('driver', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('deadline_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiment.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stepcommand', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stepcommand_command_id'), ['command_id'], unique=True)
        batch_op.create_index(batch_op.f('ix_stepcommand_experiment_id'), ['experiment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_stepcommand_state'), ['state'], unique=False)

    op.create_table('measurement',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('step_command_id', sa.Integer(), nullable=True),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('n_points', sa.Integer(), nullable=False),
    sa.Column('two_theta', sa.LargeBinary(), nullable=False),
    sa.Column('intensities', sa.LargeBinary(), nullable=False),
    sa.Column('wavelength_angstrom', sa.Float(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiment.id'], ),
    sa.ForeignKeyConstraint(['step_command_id'], ['stepcommand.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('measurement', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_measurement_experiment_id'), ['experiment_id'], unique=False)

    op.create_table('phaseanalysis',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('measurement_id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('phases', sa.JSON(), nullable=True),
    sa.Column('rwp', sa.Float(), nullable=True),
    sa.Column('target_yield', sa.Float(), nullable=True),
    sa.Column('method', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('method_version', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiment.id'], ),
    sa.ForeignKeyConstraint(['measurement_id'], ['measurement.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('phaseanalysis', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_phaseanalysis_experiment_id'), ['experiment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_phaseanalysis_measurement_id'), ['measurement_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('phaseanalysis', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_phaseanalysis_measurement_id'))
        batch_op.drop_index(batch_op.f('ix_phaseanalysis_experiment_id'))

    op.drop_table('phaseanalysis')
    with op.batch_alter_table('measurement', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_measurement_experiment_id'))

    op.drop_table('measurement')
    with op.batch_alter_table('stepcommand', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stepcommand_state'))
        batch_op.drop_index(batch_op.f('ix_stepcommand_experiment_id'))
        batch_op.drop_index(batch_op.f('ix_stepcommand_command_id'))

    op.drop_table('stepcommand')
    with op.batch_alter_table('experiment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_experiment_target_id'))
        batch_op.drop_index(batch_op.f('ix_experiment_sample_id'))
        batch_op.drop_index(batch_op.f('ix_experiment_recipe_id'))
        batch_op.drop_index('ix_experiment_campaign_state')
        batch_op.drop_index(batch_op.f('ix_experiment_campaign_id'))

    op.drop_table('experiment')
    with op.batch_alter_table('recipe', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recipe_target_id'))

    op.drop_table('recipe')
    with op.batch_alter_table('target', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_target_state'))
        batch_op.drop_index(batch_op.f('ix_target_formula'))
        batch_op.drop_index(batch_op.f('ix_target_candidate_id'))
        batch_op.drop_index(batch_op.f('ix_target_campaign_id'))

    op.drop_table('target')
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prediction_model_version_id'))
        batch_op.drop_index(batch_op.f('ix_prediction_candidate_id'))

    op.drop_table('prediction')
    with op.batch_alter_table('modelversion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_modelversion_campaign_id'))

    op.drop_table('modelversion')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_campaign_id_id')

    op.drop_table('event')
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_candidate_formula'))
        batch_op.drop_index(batch_op.f('ix_candidate_chemical_system'))
        batch_op.drop_index(batch_op.f('ix_candidate_campaign_id'))

    op.drop_table('candidate')
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_name'))

    op.drop_table('campaign')
