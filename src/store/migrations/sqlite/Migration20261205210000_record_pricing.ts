// What each record was priced with (issue 17): token kinds, cost source, the
// catalog cost beside the recorded one and the entry that priced it; per-label
// catalog totals; the token fingerprint of reservation keys. Columns added in
// place with defaults (SQLite's ADD COLUMN rewrites no row). Label totals
// recorded before prices existed had no catalog price: unpriced_record_count
// starts at their record_count. Never edit an applied migration.
import { Migration } from "@mikro-orm/migrations";

export class Migration20261205210000_record_pricing extends Migration {
  override name = "Migration20261205210000_record_pricing";

  override up(): void {
    this.addSql("alter table `cost_records` add column `cached_input_tokens` bigint not null default '0';");
    this.addSql("alter table `cost_records` add column `cache_write_tokens` bigint not null default '0';");
    this.addSql("alter table `cost_records` add column `cost_source` text not null default 'reported';");
    this.addSql("alter table `cost_records` add column `catalog_cost_nanos` bigint null;");
    this.addSql("alter table `cost_records` add column `price_id` text not null default '';");
    this.addSql("alter table `cost_records` add column `occurred_at_ms` bigint null;");
    this.addSql("alter table `project_label_totals` add column `catalog_cost_nanos` bigint not null default '0';");
    this.addSql("alter table `project_label_totals` add column `priced_cost_nanos` bigint not null default '0';");
    this.addSql("alter table `project_label_totals` add column `unpriced_record_count` bigint not null default '0';");
    this.addSql("update `project_label_totals` set `unpriced_record_count` = `record_count`;");
    this.addSql("alter table `reserve_keys` add column `token_fingerprint` text not null default '';");
  }

  override down(): void {
    this.addSql("alter table `cost_records` drop column `cached_input_tokens`;");
    this.addSql("alter table `cost_records` drop column `cache_write_tokens`;");
    this.addSql("alter table `cost_records` drop column `cost_source`;");
    this.addSql("alter table `cost_records` drop column `catalog_cost_nanos`;");
    this.addSql("alter table `cost_records` drop column `price_id`;");
    this.addSql("alter table `cost_records` drop column `occurred_at_ms`;");
    this.addSql("alter table `project_label_totals` drop column `catalog_cost_nanos`;");
    this.addSql("alter table `project_label_totals` drop column `priced_cost_nanos`;");
    this.addSql("alter table `project_label_totals` drop column `unpriced_record_count`;");
    this.addSql("alter table `reserve_keys` drop column `token_fingerprint`;");
  }
}
