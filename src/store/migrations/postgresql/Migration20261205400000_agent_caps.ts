// Per-agent caps and the runaway guard (issue 18): the caps and the rate of
// a project's budget, the agent of a hold and of a reservation key, each
// agent's day and month spend, and what the rates count (recorded buckets and
// the holds at levels with a rate). Written to match MikroORM's schema diff
// of ../../entities.ts. Every default is "none", so existing budgets keep
// deciding as before. Never edit an applied migration.
import { Migration } from "@mikro-orm/migrations";

export class Migration20261205400000_agent_caps extends Migration {
  override name = "Migration20261205400000_agent_caps";

  override up(): void {
    this.addSql(
      `create table "agent_windows" ("project_id" varchar(128) not null, "agent_id" varchar(128) not null, "day_period" varchar(16) not null, "day_cost_nanos" bigint not null, "month_period" varchar(16) not null, "month_cost_nanos" bigint not null, "updated_at_ms" bigint not null, primary key ("project_id", "agent_id"));`,
    );
    this.addSql(
      `create table "rate_buckets" ("project_id" varchar(128) not null, "agent_id" varchar(128) not null, "bucket_ms" bigint not null, "recorded_nanos" bigint not null, primary key ("project_id", "agent_id", "bucket_ms"));`,
    );
    this.addSql(`create index "rate_buckets_bucket_ms_index" on "rate_buckets" ("bucket_ms");`);
    this.addSql(
      `create table "rate_holds" ("project_id" varchar(128) not null, "hold_id" varchar(128) not null, "placed_at_ms" bigint not null, "expires_at_ms" bigint not null, "amount_nanos" bigint not null, primary key ("project_id", "hold_id"));`,
    );
    this.addSql(`create index "rate_holds_hold_id_index" on "rate_holds" ("hold_id");`);
    this.addSql(`create index "rate_holds_expires_at_ms_index" on "rate_holds" ("expires_at_ms");`);
    this.addSql(`alter table "holds" add "agent_id" varchar(128) not null default '';`);
    this.addSql(`create index "holds_project_id_agent_id_expires_at_ms_index" on "holds" ("project_id", "agent_id", "expires_at_ms");`);
    this.addSql(
      `alter table "project_budgets" add "agent_limit_nanos" bigint not null default '0', add "agent_daily_limit_nanos" bigint not null default '0', add "agent_monthly_limit_nanos" bigint not null default '0', add "agent_rate_limit_nanos_per_minute" bigint not null default '0', add "agent_limit_overrides" text not null default '', add "rate_limit_nanos_per_minute" bigint not null default '0';`,
    );
    this.addSql(`alter table "reserve_keys" add "agent_id" varchar(128) not null default '';`);
  }

  override down(): void {
    this.addSql(`drop table if exists "agent_windows";`);
    this.addSql(`drop table if exists "rate_buckets";`);
    this.addSql(`drop table if exists "rate_holds";`);
    this.addSql(`drop index if exists "holds_project_id_agent_id_expires_at_ms_index";`);
    this.addSql(`alter table "holds" drop column "agent_id";`);
    this.addSql(
      `alter table "project_budgets" drop column "agent_limit_nanos", drop column "agent_daily_limit_nanos", drop column "agent_monthly_limit_nanos", drop column "agent_rate_limit_nanos_per_minute", drop column "agent_limit_overrides", drop column "rate_limit_nanos_per_minute";`,
    );
    this.addSql(`alter table "reserve_keys" drop column "agent_id";`);
  }
}
