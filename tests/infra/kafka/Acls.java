// Creates ACLs with Kafka's own Admin client (aiokafka 0.14 has no create_acls).
//
// Run with the JDK's single-file source launcher and the resolved jars, as tests/infra does:
//   java -cp 'tests/infra/kafka/lib/*' tests/infra/kafka/Acls.java BOOTSTRAP ACL...
// Each ACL is "principal|resourceType|resourceName|patternType|operation|permission|host",
// e.g. "User:edge|TOPIC|norm-x|LITERAL|WRITE|ALLOW|*". The connection is PLAINTEXT (the harness
// makes its principal, User:ANONYMOUS, a super user). Prints one line per ACL the broker then
// lists for the same principals, and exits non-zero on any error.

import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Acls {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: Acls BOOTSTRAP principal|type|name|pattern|op|perm|host ...");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        List<AclBinding> bindings = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            String[] f = args[i].split("\\|", -1);
            if (f.length != 7) {
                throw new IllegalArgumentException("ACL needs 7 fields: " + args[i]);
            }
            ResourcePattern pattern = new ResourcePattern(
                    ResourceType.fromString(f[1]), f[2], PatternType.fromString(f[3]));
            AccessControlEntry entry = new AccessControlEntry(
                    f[0], f[6], AclOperation.fromString(f[4]), AclPermissionType.fromString(f[5]));
            bindings.add(new AclBinding(pattern, entry));
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(bindings).all().get(60, TimeUnit.SECONDS);
            for (AclBinding b : admin.describeAcls(AclBindingFilter.ANY).values().get(60, TimeUnit.SECONDS)) {
                System.out.println(b);
            }
        }
    }
}
