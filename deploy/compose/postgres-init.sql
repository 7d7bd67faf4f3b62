-- The distributed profile's one PostgreSQL server holds two databases: Airflow's metadata (and the
-- Celery result backend) and MLflow's tracking and registry store. The postgres image runs this
-- once, as POSTGRES_USER, when its data volume is empty (/docker-entrypoint-initdb.d), so both are
-- owned by the role the compose file connects as. A plain SQL file cannot read the environment:
-- separate roles with their own passwords would need a shell init script instead.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
