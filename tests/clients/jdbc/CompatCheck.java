// The PostgreSQL JDBC driver against the proxy's compat scenario
// (tests/integration/test_compat_jdbc.py compiles and runs this).
//
// Usage: java -cp postgresql.jar:DIR CompatCheck SCENARIO...
// with PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSWORD in the environment.
// Scenarios: masked, denied, metadata, keys, fetch, batch. Prints one
// key=value per line for the test to assert; an unexpected exception prints
// <scenario>.error=... and makes the exit status 1.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.TreeSet;
import org.postgresql.PGStatement;

public final class CompatCheck {
    private static final String PEOPLE = "SELECT id, name, ssn FROM compat.people";

    private CompatCheck() {}

    public static void main(String[] args) {
        boolean failed = false;
        for (String scenario : args) {
            try {
                switch (scenario) {
                    case "masked" -> masked();
                    case "denied" -> denied();
                    case "metadata" -> metadata();
                    case "keys" -> keys();
                    case "fetch" -> fetch();
                    case "batch" -> batch();
                    default -> throw new IllegalArgumentException("unknown scenario " + scenario);
                }
            } catch (Exception e) {
                failed = true;
                out(scenario + ".error", e.getClass().getName() + ": " + e.getMessage());
            }
        }
        System.out.flush();
        System.exit(failed ? 1 : 0);
    }

    static void out(String key, Object value) {
        System.out.println(key + "=" + String.valueOf(value).replace("\n", "\\n"));
    }

    static Connection connect(String prepareThreshold) throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
                + "/" + System.getenv("PGDATABASE");
        Properties props = new Properties();
        props.setProperty("user", System.getenv("PGUSER"));
        props.setProperty("password", System.getenv("PGPASSWORD"));
        props.setProperty("ApplicationName", "jdbc-compat");
        props.setProperty("sslmode", "disable");
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "30");
        if (prepareThreshold != null) {
            props.setProperty("prepareThreshold", prepareThreshold);
        }
        return DriverManager.getConnection(url, props);
    }

    /** "id|name|ssn" rows of a result, joined with ";". */
    static String rows(ResultSet rs) throws SQLException {
        List<String> rows = new ArrayList<>();
        while (rs.next()) {
            rows.add(rs.getInt(1) + "|" + rs.getString(2) + "|" + rs.getString(3));
        }
        return String.join(";", rows);
    }

    static String one(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            return rs.next() ? rs.getString(1) : "<no row>";
        }
    }

    /** A PreparedStatement run 8 times: past prepareThreshold it is a server-side statement. */
    static void preparedRuns(String prefix, String threshold) throws SQLException {
        try (Connection conn = connect(threshold);
                PreparedStatement ps = conn.prepareStatement(PEOPLE + " WHERE id = ?")) {
            List<String> seen = new ArrayList<>();
            for (int id = 1; id <= 8; id++) {
                ps.setInt(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    seen.add(rows(rs));
                }
            }
            out(prefix + ".threshold", ps.unwrap(PGStatement.class).getPrepareThreshold());
            out(prefix + ".server_prepared", ps.unwrap(PGStatement.class).isUseServerPrepare());
            out(prefix + ".rows", String.join(";", seen));
            // Named protocol-level statements this session holds on the server.
            out(prefix + ".named_on_server", one(conn, "SELECT string_agg(name, ',' ORDER BY name)"
                    + " FROM pg_prepared_statements WHERE NOT from_sql"
                    + " AND strpos(statement, 'pg_prepared' || '_statements') = 0"));
        }
    }

    static void masked() throws SQLException {
        try (Connection conn = connect(null); Statement st = conn.createStatement()) {
            try (ResultSet rs = st.executeQuery(PEOPLE + " ORDER BY id")) {
                out("masked.statement", rows(rs));
            }
            // ssn in a filter sees the mask too.
            out("masked.filter",
                    one(conn, "SELECT count(*) FROM compat.people WHERE ssn = '****'"));
        }
        preparedRuns("masked.prepared_default", null);
        preparedRuns("masked.prepared_1", "1");
    }

    static void denied() throws SQLException {
        try (Connection conn = connect("1")) {
            out("denied.autocommit", conn.getAutoCommit());
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT id, notes FROM compat.people");
                out("denied.statement.sqlstate", "<no error>");
            } catch (SQLException e) {
                out("denied.statement.sqlstate", e.getSQLState());
                out("denied.statement.message", e.getMessage());
            }
            out("denied.statement.next", one(conn, "SELECT ssn FROM compat.people WHERE id = 2"));
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT notes FROM compat.people WHERE id = ?")) {
                ps.setInt(1, 1);
                ps.executeQuery();
                out("denied.prepared.sqlstate", "<no error>");
            } catch (SQLException e) {
                out("denied.prepared.sqlstate", e.getSQLState());
            }
            try (PreparedStatement ps = conn.prepareStatement(PEOPLE + " WHERE id = ?")) {
                ps.setInt(1, 3);
                try (ResultSet rs = ps.executeQuery()) {
                    out("denied.prepared.next", rows(rs));
                }
            }

            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("INSERT INTO compat.scratch VALUES (3100, 'rolled back')");
                st.executeQuery("SELECT notes FROM compat.people WHERE id = 1");
                out("denied.tx.sqlstate", "<no error>");
            } catch (SQLException e) {
                out("denied.tx.sqlstate", e.getSQLState());
            }
            conn.rollback();
            out("denied.tx.after_rollback",
                    one(conn, "SELECT count(*) FROM compat.scratch WHERE id = 3100"));
            out("denied.tx.next", one(conn, "SELECT ssn FROM compat.people WHERE id = 4"));
            conn.commit();
            conn.setAutoCommit(true);
            out("denied.closed", conn.isClosed());
        }
    }

    static void metadata() throws SQLException {
        try (Connection conn = connect(null)) {
            DatabaseMetaData md = conn.getMetaData();
            out("metadata.product", md.getDatabaseProductName());
            // As DBeaver asks: schemas, the tables of one, then a table's columns.
            TreeSet<String> schemas = new TreeSet<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                }
            }
            out("metadata.schemas_has_compat", schemas.contains("compat"));
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "compat", "%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME")
                            + ":" + rs.getString("TABLE_TYPE"));
                }
            }
            out("metadata.tables", String.join(",", tables));
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "compat", "people", "%")) {
                while (rs.next()) {
                    columns.add(rs.getInt("ORDINAL_POSITION") + ":" + rs.getString("COLUMN_NAME")
                            + ":" + rs.getString("TYPE_NAME") + ":" + rs.getString("IS_NULLABLE"));
                }
            }
            out("metadata.columns", String.join(",", columns));
            out("metadata.next", one(conn, "SELECT ssn FROM compat.people WHERE id = 5"));
        }
    }

    /** Keys and indexes, as generic JDBC tools ask for them. */
    static void keys() throws SQLException {
        try (Connection conn = connect(null)) {
            DatabaseMetaData md = conn.getMetaData();
            List<String> keys = new ArrayList<>();
            try (ResultSet rs = md.getPrimaryKeys(null, "compat", "people")) {
                while (rs.next()) {
                    keys.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("PK_NAME"));
                }
            }
            out("keys.primary", String.join(",", keys));
            List<String> indexes = new ArrayList<>();
            try (ResultSet rs = md.getIndexInfo(null, "compat", "people", false, true)) {
                while (rs.next()) {
                    indexes.add(rs.getString("INDEX_NAME") + ":" + rs.getString("COLUMN_NAME")
                            + ":" + rs.getBoolean("NON_UNIQUE"));
                }
            }
            out("keys.indexes", String.join(",", indexes));
        }
    }

    static void fetch() throws SQLException {
        try (Connection conn = connect(null)) {
            // In a transaction with a fetch size the driver reads through a portal
            // (Execute with a row limit, PortalSuspended, more Executes).
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(3);
                try (ResultSet rs = st.executeQuery(PEOPLE + " ORDER BY id")) {
                    out("fetch.statement", rows(rs));
                }
            }
            try (PreparedStatement ps =
                    conn.prepareStatement(PEOPLE + " WHERE id > ? ORDER BY id")) {
                ps.setFetchSize(4);
                ps.setInt(1, 0);
                try (ResultSet rs = ps.executeQuery()) {
                    out("fetch.prepared", rows(rs));
                }
            }
            conn.commit();
            out("fetch.next", one(conn, "SELECT count(*) FROM compat.people"));
            conn.commit();
        }
    }

    static void batch() throws SQLException {
        try (Connection conn = connect(null)) {
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("DELETE FROM compat.scratch WHERE id BETWEEN 3200 AND 3299");
            }
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO compat.scratch (id, label) VALUES (?, ?)")) {
                for (int id = 3200; id < 3207; id++) {
                    ps.setInt(1, id);
                    ps.setString(2, "batch " + id);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                List<String> shown = new ArrayList<>();
                for (int c : counts) {
                    shown.add(Integer.toString(c));
                }
                out("batch.counts", String.join(",", shown));
            }
            out("batch.rows", one(conn, "SELECT count(*) || '|' || min(label) || '|' || max(label)"
                    + " FROM compat.scratch WHERE id BETWEEN 3200 AND 3299"));
            try (Statement st = conn.createStatement()) {
                out("batch.deleted", st.executeUpdate(
                        "DELETE FROM compat.scratch WHERE id BETWEEN 3200 AND 3299"));
            }
        }
    }
}
