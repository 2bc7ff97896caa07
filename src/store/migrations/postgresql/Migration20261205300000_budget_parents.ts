// Nested budgets (issue 18), for PostgreSQL: a project's budget may name a
// parent project. Same name as the SQLite migration of the same change. ""
// is no parent, so every existing budget stays a root (adding a column with a
// constant default rewrites no row); the index finds a project's children.
// Never edit an applied migration.
import { Migration } from "@mikro-orm/migrations";

export class Migration20261205300000_budget_parents extends Migration {
  override name = "Migration20261205300000_budget_parents";

  override up(): void {
    this.addSql(`alter table "project_budgets" add column "parent_id" varchar(128) not null default '';`);
    this.addSql(`create index "project_budgets_parent_id_index" on "project_budgets" ("parent_id");`);
  }

  override down(): void {
    this.addSql(`drop index if exists "project_budgets_parent_id_index";`);
    this.addSql(`alter table "project_budgets" drop column "parent_id";`);
  }
}
