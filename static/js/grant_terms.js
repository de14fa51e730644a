// "Also grant…": changing a term ticks "Give this grant when I approve", so terms typed are never
// dropped silently; unticking it afterwards still approves without a grant.
(() => {
  const section = document.getElementById("grant-terms");
  const give = document.getElementById("id_grant");
  if (!section || !give) return;
  section.addEventListener("input", (event) => {
    if (event.target !== give) give.checked = true;
  });
})();
