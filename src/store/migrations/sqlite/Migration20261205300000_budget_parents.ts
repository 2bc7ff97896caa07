// Nested budgets (issue 18): a project's budget may name a parent project.
// Written to match MikroORM's schema diff of ../../entities.ts. "" is no
// parent, so every existing budget stays a root; the index finds a project's
// children (the tree's depth check, re-parenting, the breakdown by child).
// Never edit an applied migration.
import { Migration } from "@mikro-orm/migrations";

export class Migration20261205300000_budget_parents extends Migration {
  override name = "Migration20261205300000_budget_parents";

  override up(): void {
    this.addSql("alter table `project_budgets` add column `parent_id` text not null default '';");
    this.addSql("create index `project_budgets_parent_id_index` on `project_budgets` (`parent_id`);");
  }

  override down(): void {
    this.addSql("drop index if exists `project_budgets_parent_id_index`;");
    this.addSql("alter table `project_budgets` drop column `parent_id`;");
  }
}
