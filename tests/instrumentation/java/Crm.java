import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.opentelemetry.api.trace.Span;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.util.concurrent.Executors;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The CRM API of tests/instrumentation.rs, run with the OpenTelemetry Java agent (RabbitMQ
 * amqp-client, JDBC on H2, the JDK's HTTP server).
 *
 * <p>It makes no span of its own: it only sets the attributes a developer would set on the current
 * span (order.id, order.status, enduser.id).
 *
 * <ul>
 *   <li>consumes orders.created: saves the order, sets its status to accepted, publishes it on
 *       orders.accepted for MES;
 *   <li>{@code POST /orders/{id}/status} {"status", "user"}: MES reports a new status, saved.
 * </ul>
 *
 * Environment: AMQP_URL, CRM_PORT.
 */
public final class Crm {
  private static final String CONSUMED = "orders.created";
  private static final String PUBLISHED = "orders.accepted";
  private static final Pattern STATUS_PATH = Pattern.compile("^/orders/([^/]+)/status$");

  private final java.sql.Connection db;
  private final Channel channel;

  private Crm(java.sql.Connection db, Channel channel) {
    this.db = db;
    this.channel = channel;
  }

  public static void main(String[] args) throws Exception {
    java.sql.Connection db = DriverManager.getConnection("jdbc:h2:mem:crm;DB_CLOSE_DELAY=-1");
    try (var create = db.createStatement()) {
      create.execute(
          "CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY, user_id VARCHAR(64), status VARCHAR(32))");
    }
    ConnectionFactory factory = new ConnectionFactory();
    factory.setUri(System.getenv("AMQP_URL"));
    Connection connection = factory.newConnection("crm-api");
    Channel channel = connection.createChannel();
    channel.queueDeclare(CONSUMED, true, false, false, null);
    channel.queueDeclare(PUBLISHED, true, false, false, null);
    Crm crm = new Crm(db, channel);

    channel.basicConsume(
        CONSUMED, true, (tag, delivery) -> crm.accept(delivery.getBody()), tag -> {});

    HttpServer http =
        HttpServer.create(
            new InetSocketAddress("127.0.0.1", Integer.parseInt(System.getenv("CRM_PORT"))), 0);
    http.createContext("/orders/", crm::changeStatus);
    http.setExecutor(Executors.newFixedThreadPool(4));
    http.start();
    System.err.println("crm-api listening on " + http.getAddress().getPort());
  }

  /** An order from the shop: saved, accepted and handed on to MES. */
  private void accept(byte[] body) throws IOException {
    String message = new String(body, StandardCharsets.UTF_8);
    String orderId = field(message, "order_id");
    String user = field(message, "user");
    Span span = Span.current();
    span.setAttribute("order.id", orderId);
    span.setAttribute("enduser.id", user);
    span.setAttribute("order.status", "accepted");
    synchronized (db) {
      try (PreparedStatement insert =
          db.prepareStatement("INSERT INTO orders (id, user_id, status) VALUES (?, ?, 'accepted')")) {
        insert.setString(1, orderId);
        insert.setString(2, user);
        insert.executeUpdate();
      } catch (SQLException e) {
        throw new IOException("saving order " + orderId, e);
      }
    }
    String out = "{\"order_id\":\"" + orderId + "\",\"user\":\"" + user + "\"}";
    channel.basicPublish("", PUBLISHED, null, out.getBytes(StandardCharsets.UTF_8));
  }

  /** POST /orders/{id}/status from MES. */
  private void changeStatus(HttpExchange exchange) throws IOException {
    Matcher path = STATUS_PATH.matcher(exchange.getRequestURI().getPath());
    if (!"POST".equals(exchange.getRequestMethod()) || !path.matches()) {
      exchange.sendResponseHeaders(404, -1);
      exchange.close();
      return;
    }
    String orderId = path.group(1);
    String message = new String(exchange.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
    String status = field(message, "status");
    Span span = Span.current();
    span.setAttribute("order.id", orderId);
    span.setAttribute("order.status", status);
    span.setAttribute("enduser.id", field(message, "user"));
    int updated;
    synchronized (db) {
      try (PreparedStatement update =
          db.prepareStatement("UPDATE orders SET status = ? WHERE id = ?")) {
        update.setString(1, status);
        update.setString(2, orderId);
        updated = update.executeUpdate();
      } catch (SQLException e) {
        throw new IOException("updating order " + orderId, e);
      }
    }
    exchange.sendResponseHeaders(updated == 1 ? 204 : 404, -1);
    exchange.close();
  }

  /** The string value of a top-level field of a flat JSON object (all this service receives). */
  private static String field(String json, String name) {
    Matcher m = Pattern.compile("\"" + name + "\"\\s*:\\s*\"([^\"]*)\"").matcher(json);
    if (!m.find()) {
      throw new IllegalArgumentException("no string field " + name + " in " + json);
    }
    return m.group(1);
  }
}
