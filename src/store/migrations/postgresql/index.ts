// The PostgreSQL migration history, in order. Listed explicitly (no file
// globbing) so the same list works from source, from a package and in tests.
// Kept in step with ../sqlite/index.ts: the same names in the same order
// (test/store/postgres-store.test.ts checks it).
import { Migration20261127000000_initial } from "./Migration20261127000000_initial.ts";
import { Migration20261201000000_holds_windows_alerts } from "./Migration20261201000000_holds_windows_alerts.ts";
import { Migration20261205000000_reserve_keys } from "./Migration20261205000000_reserve_keys.ts";
import { Migration20261205100000_project_archives } from "./Migration20261205100000_project_archives.ts";
import { Migration20261205200000_model_prices } from "./Migration20261205200000_model_prices.ts";
import { Migration20261205210000_record_pricing } from "./Migration20261205210000_record_pricing.ts";
import { Migration20261205300000_budget_parents } from "./Migration20261205300000_budget_parents.ts";
import { Migration20261205400000_agent_caps } from "./Migration20261205400000_agent_caps.ts";

export const postgresqlMigrations = [
  Migration20261127000000_initial,
  Migration20261201000000_holds_windows_alerts,
  Migration20261205000000_reserve_keys,
  Migration20261205100000_project_archives,
  Migration20261205200000_model_prices,
  Migration20261205210000_record_pricing,
  Migration20261205300000_budget_parents,
  Migration20261205400000_agent_caps,
];
