<?php
/**
 * Dashboard widget. Variable: $counts (allowed, review, blocked).
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}
?>
<ul class="activelead-today">
	<li><?php esc_html_e( 'Allowed', 'activelead' ); ?>: <strong class="activelead-count-allowed"><?php echo esc_html( number_format_i18n( $counts['allowed'] ) ); ?></strong></li>
	<li><?php esc_html_e( 'Held for review', 'activelead' ); ?>: <strong class="activelead-count-review"><?php echo esc_html( number_format_i18n( $counts['review'] ) ); ?></strong></li>
	<li><?php esc_html_e( 'Blocked', 'activelead' ); ?>: <strong class="activelead-count-blocked"><?php echo esc_html( number_format_i18n( $counts['blocked'] ) ); ?></strong></li>
</ul>
