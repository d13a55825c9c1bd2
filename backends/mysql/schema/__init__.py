"""The schema files, shipped as package data; see the .sql files beside this one."""
