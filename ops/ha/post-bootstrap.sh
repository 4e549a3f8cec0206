#!/bin/sh
# Patroni runs this once, on the node that initialises the cluster, with a superuser connection string as
# its last argument: the service's role and database, replicated to every node from then on.
set -eu
user="${PAYMENTS_DB_USER:-payments}"
psql "$1" -v ON_ERROR_STOP=1 -v user="$user" -v password="${PAYMENTS_DB_PASSWORD:-payments}" <<'SQL'
create role :"user" login password :'password';
create database :"user" owner :"user";
SQL
