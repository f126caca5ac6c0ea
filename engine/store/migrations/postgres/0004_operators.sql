-- The instance operators: accounts set up from the command line by whoever runs the
-- binary (`keyway admin create-operator`). Only an operator issues vouchers.
CREATE TABLE operators (
    account BIGINT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
