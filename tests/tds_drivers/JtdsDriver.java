// jTDS (Java) driven over stdin, same line protocol as pydriver.py:
//   exec <hex of the UTF-8 statement> | execp <hex statement> <hex param>,... | cancel | quit
// (execp: a PreparedStatement with string parameters, i.e. RPC sp_prepare/sp_execute)
// Prints "ready" once connected (or "connect-error <json>"), then one JSON line per exec.
// jTDS logs in with TDS 7.1 and sends LOGIN7 without PRELOGIN.  With the option
// {"prepared": true} statements go through PreparedStatement (RPC sp_prepare/sp_execute).
// Used by tests/test_tds_drivers.py (compiled there against /usr/share/java/jtds.jar).
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.*;
import java.util.ArrayList;
import java.util.List;

public class JtdsDriver {
    static Connection conn;
    static volatile Statement current;
    static boolean prepared;

    static String q(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    static String value(Object v) {
        if (v == null) return "null";
        if (v instanceof Boolean) return v.toString();
        if (v instanceof Integer || v instanceof Short || v instanceof Byte) return v.toString();
        if (v instanceof Long) return "{\"t\":\"decimal\",\"v\":" + q(v.toString()) + "}";
        if (v instanceof BigDecimal) return "{\"t\":\"BigDecimal\",\"v\":" + q(((BigDecimal) v).toPlainString()) + "}";
        if (v instanceof byte[]) {
            StringBuilder h = new StringBuilder();
            for (byte x : (byte[]) v) h.append(String.format("%02x", x));
            return "{\"t\":\"bytes\",\"v\":" + q(h.toString()) + "}";
        }
        if (v instanceof String) return q((String) v);
        return "{\"t\":" + q(v.getClass().getSimpleName()) + ",\"v\":" + q(v.toString()) + "}";
    }

    static String messages(SQLWarning w) {
        List<String> out = new ArrayList<>();
        for (; w != null; w = w.getNextWarning()) out.add("[" + w.getErrorCode() + "," + q(w.getMessage()) + "]");
        return "[" + String.join(",", out) + "]";
    }

    static String run(String sql, List<String> params) {
        List<String> rowsets = new ArrayList<>();
        String ok = "true", error = "null", errorText = "\"\"";
        Statement st = null;
        SQLWarning warnings = null;
        try {
            boolean isResult;
            if (prepared || params != null) {
                PreparedStatement ps = conn.prepareStatement(sql);
                if (params != null) for (int i = 0; i < params.size(); i++) ps.setString(i + 1, params.get(i));
                st = ps;
                current = st;
                isResult = ps.execute();
            } else {
                st = conn.createStatement();
                current = st;
                isResult = st.execute(sql);
            }
            while (true) {
                if (isResult) {
                    ResultSet rs = st.getResultSet();
                    ResultSetMetaData md = rs.getMetaData();
                    List<String> cols = new ArrayList<>();
                    for (int i = 1; i <= md.getColumnCount(); i++)
                        cols.add("[" + q(md.getColumnName(i)) + "," + q(md.getColumnTypeName(i)) + "]");
                    List<String> rows = new ArrayList<>();
                    while (rs.next()) {
                        List<String> vals = new ArrayList<>();
                        for (int i = 1; i <= md.getColumnCount(); i++) vals.add(value(rs.getObject(i)));
                        rows.add("[" + String.join(",", vals) + "]");
                    }
                    rowsets.add("{\"columns\":[" + String.join(",", cols) + "],\"rows\":[" + String.join(",", rows) + "]}");
                } else if (st.getUpdateCount() == -1) {
                    break;
                }
                isResult = st.getMoreResults();
            }
            warnings = st.getWarnings();
        } catch (SQLException e) {
            ok = "false";
            error = Integer.toString(e.getErrorCode());
            errorText = q(e.getSQLState() + ": " + e.getMessage());
            try { if (st != null) warnings = st.getWarnings(); } catch (SQLException ignored) { }
        } finally {
            current = null;
            try { if (st != null) st.close(); } catch (SQLException ignored) { }
        }
        return "{\"ok\":" + ok + ",\"error\":" + error + ",\"error_text\":" + errorText
            + ",\"messages\":" + messages(warnings) + ",\"rowsets\":[" + String.join(",", rowsets) + "]}";
    }

    /** A string option of the (flat, simple) JSON options object. */
    static String opt(String json, String key, String dflt) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("\"" + key + "\"\\s*:\\s*\"([^\"]*)\"").matcher(json);
        return m.find() ? m.group(1) : dflt;
    }

    static String unhex(String h) {
        byte[] raw = new byte[h.length() / 2];
        for (int i = 0; i < raw.length; i++) raw[i] = (byte) Integer.parseInt(h.substring(2 * i, 2 * i + 2), 16);
        return new String(raw, StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        String host = args[0], port = args[1], opts = args.length > 2 ? args[2] : "{}";
        prepared = opts.replace(" ", "").contains("\"prepared\":true");
        try {
            Class.forName("net.sourceforge.jtds.jdbc.Driver");
            conn = DriverManager.getConnection("jdbc:jtds:sqlserver://" + host + ":" + port
                + "/master;user=" + opt(opts, "user", "sa") + ";password=" + opt(opts, "password", "secret")
                + ";loginTimeout=15;socketTimeout=120");
        } catch (SQLException e) {
            System.out.println("connect-error {\"error\":" + e.getErrorCode() + ",\"error_text\":" + q(e.getMessage()) + "}");
            return;
        }
        System.out.println("ready");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        List<Thread> workers = new ArrayList<>();
        String line;
        while ((line = in.readLine()) != null) {
            String[] parts = line.trim().split(" ", 2);
            if (parts[0].equals("exec") || parts[0].equals("execp")) {
                String[] args2 = parts[1].split(" ", 2);
                String sql = unhex(args2[0]);
                List<String> params = null;
                if (parts[0].equals("execp")) {
                    params = new ArrayList<>();
                    if (args2.length > 1) for (String v : args2[1].split(",")) if (!v.isEmpty()) params.add(unhex(v));
                }
                final List<String> ps = params;
                Thread t = new Thread(() -> {
                    String res = run(sql, ps);
                    synchronized (System.out) { System.out.println(res); System.out.flush(); }
                });
                t.start();
                workers.add(t);
            } else if (parts[0].equals("cancel")) {
                // The statement object may not exist yet for an instant: wait for it.
                for (int i = 0; i < 500 && current == null; i++) Thread.sleep(10);
                Statement st = current;
                if (st != null) st.cancel();
            } else if (parts[0].equals("quit")) {
                break;
            }
        }
        for (Thread t : workers) t.join(60000);
        conn.close();
    }
}
